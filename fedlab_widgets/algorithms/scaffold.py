"""SCAFFOLD's control variates (Karimireddy et al. 2020, Algorithm 1, option II).

Every client ``k`` keeps a control variate ``c_k`` (in the client store, zero
until first sampled) and the server keeps ``c`` (in ``ctx.state``). During local
training every gradient is corrected by ``c - c_k``: an estimate of how the
client's own gradient differs from the global one, so the local steps follow the
global direction instead of drifting to the client's optimum. After ``K_k``
local steps with learning rate ``lr`` and update ``delta_k = y_k - x``::

    c_k+ = c_k - c - delta_k / (K_k * lr)                         (option II)
    c    = c + sum_k (n_k / n) * (c_k+ - c_k)

where ``n`` is all clients' samples together. With equal client sizes
``n_k / n = 1 / N`` and this is the paper's ``c + (1/N) sum (c_k+ - c_k)``; with
unequal sizes it keeps ``c`` the sample-weighted mean of the ``c_k``, matching
FedAvg's sample-weighted objective. The model update is the usual weighted
mean, times the server lr (``server_lr``, the paper's eta_g).
"""

from __future__ import annotations

import torch

__all__ = ["ControlVariates"]

_KEY = "scaffold_c"


class ControlVariates:
    """The two halves of SCAFFOLD: the local correction, and the control-variate update."""

    def _server_c(self, ctx) -> torch.Tensor:
        c = ctx.state.get(_KEY)
        if c is None:
            c = ctx.state[_KEY] = torch.zeros_like(ctx.x)
        return c

    def correction(self, clients, ctx) -> torch.Tensor:
        """``c - c_k`` for each client (rows in ``clients`` order), ``[M, D]``."""
        ck = ctx.store.gather(_KEY, clients, ctx.x.numel(), dtype=ctx.x.dtype)
        return torch.sub(self._server_c(ctx), ck)

    def step(self, updates, ctx):
        """The client step of a recipe: update the control variates, pass the updates on."""
        self.update(updates, ctx)
        return updates

    def update(self, updates, ctx) -> None:
        """Option II: new ``c_k`` from the model difference; ``c`` moves by their weighted change."""
        c = self._server_c(ctx)
        ck = ctx.store.gather(_KEY, updates.clients, ctx.x.numel(), dtype=ctx.x.dtype)
        scale = (-1.0 / (updates.steps.to(torch.float64) * ctx.lr)).to(ck.dtype)
        new = torch.addcmul(ck, updates.delta, scale[:, None]).sub_(c)  # c_k - c - delta_k/(K_k lr)
        p = (updates.weight / ctx.total_samples).to(new.dtype)
        c.add_(p @ new - p @ ck)                                        # sum_k p_k (c_k+ - c_k)
        ctx.store.scatter(_KEY, updates.clients, new)
