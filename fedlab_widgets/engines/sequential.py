"""The reference engine: the sampled clients train one after another, with plain autograd."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .base import ClientUpdates, FlatLayout, LocalRule, Schedule

__all__ = ["SequentialEngine", "sgd_steps"]


def sgd_steps(model: nn.Module, params: list[torch.Tensor], dataset, batches, *,
              lr: float, rule: LocalRule | None = None, x: list[torch.Tensor] | None = None,
              correction: list[torch.Tensor] | None = None, row: int = 0) -> list[torch.Tensor]:
    """SGD (no momentum) on ``model``, one step per index tensor in ``batches``.

    The optimiser of a FedAvg client, and of the centralised baseline: each step
    minimises its minibatch's mean cross-entropy; ``params`` are updated in place.
    With a :class:`LocalRule`, its correction (evaluated at the same point as the
    gradient, against the global parameters ``x`` and the client's ``correction``
    row) is added to every step, and its ``transform`` (for schedule row ``row``)
    applied to every minibatch. Returns the (detached) minibatch losses.
    """
    losses = []
    correct = rule is not None and rule.has_correction
    transform = None if rule is None else rule.transform
    rows = slice(row, row + 1)
    for batch in batches:
        xb, yb = dataset.images[batch], dataset.labels[batch]
        if transform is not None:
            xb, yb = transform(rows, batch[None], xb[None], yb[None])
            xb, yb = xb[0], yb[0]
        with torch.enable_grad():
            loss = F.cross_entropy(model(xb), yb)
            grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            if correct:
                rule.correct_(params, x, correction, lr)
            torch._foreach_add_(params, grads, alpha=-lr)
        losses.append(loss.detach())
    return losses


class SequentialEngine:
    """Trains the schedule's clients one after another on one reusable worker module.

    The worker's parameters are overwritten with the global model's for each
    client, trained with :func:`sgd_steps`, and its row of the update tensor is
    ``x_k - x``. With ``start`` (``[M, D]``, one row per schedule row) client ``k``
    starts from its own row instead (a personal head) and its update is
    ``x_k - start_k``. Slow but obviously right: the vectorised engine is tested
    against it.
    """

    name = "sequential"

    def __init__(self, model: nn.Module, train):
        self.train = train
        self.layout = FlatLayout(model)
        self.worker = copy.deepcopy(model).train()
        self.params = list(self.worker.parameters())

    def train_clients(self, x: torch.Tensor, schedule: Schedule, *, lr: float,
                      rule: LocalRule = LocalRule(), start: torch.Tensor | None = None
                      ) -> ClientUpdates:
        layout = self.layout
        xs = layout.views(x)
        M = len(schedule)
        delta = torch.empty(M, layout.size, dtype=x.dtype)
        loss = torch.empty(M, dtype=torch.float64)
        for row in range(M):
            with torch.no_grad():
                torch._foreach_copy_(self.params, xs if start is None else layout.views(start[row]))
            c = None if rule.correction is None else layout.views(rule.correction[row])
            losses = sgd_steps(self.worker, self.params, self.train, schedule.batches(row),
                               lr=lr, rule=rule, x=xs, correction=c, row=row)
            loss[row] = float(torch.stack(losses).double().mean())
            with torch.no_grad():
                torch.sub(layout.flatten(self.params), x if start is None else start[row],
                          out=delta[row])
        return ClientUpdates(clients=list(schedule.clients), delta=delta,
                             weight=schedule.weights.clone(), steps=schedule.steps.clone(),
                             loss=loss)
