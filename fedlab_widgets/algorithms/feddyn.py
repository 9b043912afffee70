"""FedDyn's dynamic regulariser (Acar et al. 2021, "Federated learning based on dynamic
regularization", Algorithm 1).

Client ``k`` minimises ``L_k(w) - <g_k, w> + alpha/2 ||w - x||^2``, where ``g_k`` (kept in
the client store, zero until first sampled) is the gradient of ``L_k`` at the client's last
local model; its local gradient is therefore ``grad L_k(w) - g_k + alpha (w - x)``: FedProx's
proximal term (``mu = alpha``) and a per-client correction ``-g_k``, both of which the
engines apply. After local training (update ``delta_k = w_k - x``) each client and the server
update their state::

    g_k <- g_k - alpha * delta_k
    h   <- h - alpha * (1/K) * sum_{k sampled} delta_k          (K: all clients)
    x   <- mean_k w_k - h / alpha  =  x + mean_k delta_k - h / alpha

The kit averages the updates with its weighted mean (the paper's plain mean with equal
client sizes). As a recipe: one local correction, one client step, one server step.
"""

from __future__ import annotations

import torch

__all__ = ["DynamicRegulariser"]

_KEY = "feddyn_g"


class DynamicRegulariser:
    """FedDyn's three pieces: the local correction, the clients' and the server's state steps."""

    def __init__(self, alpha: float):
        self.alpha = float(alpha)

    def correction(self, clients, ctx) -> torch.Tensor:
        """``-g_k`` for each client, ``[M, D]`` (rows in ``clients`` order)."""
        return -ctx.store.gather(_KEY, clients, ctx.x.numel(), dtype=ctx.x.dtype)

    def client_step(self, updates, ctx):
        """``g_k <- g_k - alpha * delta_k`` for the clients that trained."""
        g = ctx.store.gather(_KEY, updates.clients, ctx.x.numel(), dtype=updates.delta.dtype)
        ctx.store.scatter(_KEY, updates.clients, g - self.alpha * updates.delta)
        return updates

    def server_step(self, delta: torch.Tensor, ctx) -> torch.Tensor:
        """``h <- h - alpha * m/K * mean delta``; the step becomes ``mean delta - h / alpha``."""
        h = ctx.state.get("feddyn_h")
        if h is None:
            h = torch.zeros_like(delta)
        h = h - self.alpha * (ctx.reporting / ctx.num_clients) * delta
        ctx.state["feddyn_h"] = h
        return delta - h / self.alpha
