"""q-FFL: weight the clients by their loss, so that the worst-served count more (Li et al. 2020).

"Fair resource allocation in federated learning" (ICLR 2020) minimises
``sum_k p_k F_k(w)^(q+1) / (q+1)``: ``q = 0`` is FedAvg's objective, a larger ``q`` puts
more weight on the clients with a high loss. Its q-FedAvg (Algorithm 2), with
``L = 1 / lr`` (the paper's Lipschitz estimate) and ``Delta w_k = L (w - w_k)`` for the
client model ``w_k`` after local training::

    Delta_k = F_k(w)^q * Delta w_k
    h_k     = q F_k(w)^(q-1) ||Delta w_k||^2 + L F_k(w)^q
    w      <- w - sum_k Delta_k / sum_k h_k

``F_k(w)`` is client ``k``'s loss at the global model on its whole training data, as in
the paper's code (plus 1e-10). The paper samples clients with probability ``p_k`` and
sums uniformly; the kit samples uniformly, so both sums are weighted by ``n_k`` (with
equal client sizes, the same update). Written on the updates ``delta_k = w_k - w``:
``w + s * (weighted mean of delta_k with weights n_k F_k^q)`` with
``s = L sum n_k F_k^q / sum n_k h_k``; at ``q = 0``, ``s`` is exactly 1 and this is FedAvg.
"""

from __future__ import annotations

import torch

__all__ = ["LossWeighting", "EPS"]

EPS = 1e-10   # the paper's code: float_power(loss + 1e-10, q)


class LossWeighting:
    """q-FedAvg's client step: the loss-weighted mean and its step size, on the ``[M, D]`` updates."""

    step_name = "loss_weights"   # what algorithms.compat checks

    def __init__(self, q: float):
        self.q = float(q)

    def client_step(self, updates, ctx):
        if self.q == 0.0:     # n_k F^0 = n_k and h_k = L exactly: FedAvg, without asking for F_k
            return updates
        if ctx.client_loss is None:
            raise ValueError("qffl needs each client's loss at the global model, which only "
                             "the clients can compute (the simulation asks them)")
        q, L = self.q, 1.0 / ctx.lr
        f = ctx.client_loss(ctx.x.unsqueeze(0), list(updates.clients))[0] + EPS   # F_k(w), float64
        n = updates.weight
        w = n * f.pow(q)                                                    # n_k F_k^q
        sq = torch.linalg.vector_norm(updates.delta, dim=1, dtype=torch.float64).pow(2) * (L * L)  # ||Delta w_k||^2
        h = q * f.pow(q - 1) * sq + L * f.pow(q)
        s = (L * w).sum() / (n * h).sum()
        delta = updates.delta if float(s) == 1.0 else updates.delta * s.to(updates.delta.dtype)
        return updates.replace(weight=w, delta=delta)
