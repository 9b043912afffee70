"""Ditto: a personal model per client, pulled towards the global one (Li, Hu, Beirami & Smith 2021).

The global model trains exactly as FedAvg. Besides, every sampled client ``k`` keeps a
personal model ``v_k`` (in the client store; the current global model the first time it
is sampled) and trains it on the *same* minibatches on its own objective plus a pull
towards the round's global model ``w``::

    F_k(v_k) + lam / 2 * ||v_k - w||^2      ->   v_k <- v_k - lr * (grad F_k(v_k) + lam * (v_k - w))

``lam = 0`` is purely local training; a large ``lam`` keeps ``v_k`` at ``w`` (the global
model). The personal model never leaves the client: it is what the client is scored with
(``sim.client_accuracy()``) and what it fine-tunes from. Each sampled client trains two
models, so a round costs about twice FedAvg's local computation.
"""

from __future__ import annotations

import torch

from ..engines.base import LocalRule

__all__ = ["PersonalModels"]


class PersonalModels:
    """Ditto's personal half: train each sampled client's ``v_k``, and say which model it uses."""

    store_key = "ditto_v"

    def __init__(self, lam: float):
        self.lam = float(lam)

    def check_lr(self, lr: float) -> None:
        """The pull ``v - lr * lam * (v - w)`` overshoots ``w`` once ``lr * lam > 1`` (and
        diverges from 2): refuse it before training."""
        if lr * self.lam > 1.0:
            raise ValueError(f"lam must be at most 1 / lr = {1.0 / lr:g} for Ditto's personal "
                             f"step, which moves v by lr * lam of the way to the global model "
                             f"(beyond that it overshoots); got lam={self.lam:g} with lr={lr:g}")

    def starts(self, clients, ctx) -> torch.Tensor:
        """``[M, D]``: each client's personal model, the global model where it has none yet."""
        v = ctx.x.unsqueeze(0).repeat(len(clients), 1)
        for i, k in enumerate(clients):
            row = ctx.store.get(self.store_key, k)
            if row is not None:
                v[i] = row
        return v

    def before_training(self, schedule, ctx) -> None:
        """The personal step: ``v_k`` trains on the round's minibatches towards ``ctx.x``."""
        v = self.starts(schedule.clients, ctx)
        upd = ctx.train(schedule, LocalRule(mu=self.lam), v)
        ctx.store.scatter(self.store_key, schedule.clients, v.add_(upd.delta))

    def client_models(self, clients, ctx) -> dict[int, torch.Tensor]:
        """The personal models of those of ``clients`` that have one."""
        have = set(ctx.store.clients(self.store_key))
        return {k: ctx.store.get(self.store_key, k) for k in clients if k in have}
