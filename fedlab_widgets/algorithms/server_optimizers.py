"""Server optimisers: the averaged update as a pseudo-gradient (Reddi et al. 2021).

The server treats ``-delta`` (the negative aggregated client update) as a
gradient and takes one optimiser step with it. With plain SGD and server lr 1
that is FedAvg: ``x + delta``. State (momentum, second moments) lives in the
simulation's ``ctx.state``, so one optimiser object can serve several runs.
"""

from __future__ import annotations

import torch

__all__ = ["ServerOptimizer", "ServerSGD", "ServerAdaptive"]


class ServerOptimizer:
    """``step(x, delta, state) -> new x``; ``state`` is a dict kept across rounds."""

    def step(self, x: torch.Tensor, delta: torch.Tensor, state: dict) -> torch.Tensor:
        raise NotImplementedError


class ServerSGD(ServerOptimizer):
    """SGD with server learning rate ``lr`` and heavy-ball ``momentum`` (FedAvgM).

    ``v = momentum * v + delta``; ``x = x + lr * v`` (Hsu et al. 2019). With
    ``momentum=0``: ``x + lr * delta``, and ``lr=1`` is FedAvg.

    Examples
    --------
    >>> import torch
    >>> opt, state = ServerSGD(lr=1.0, momentum=0.5), {}
    >>> x = opt.step(torch.zeros(1), torch.ones(1), state)
    >>> opt.step(x, torch.ones(1), state)
    tensor([2.5000])
    """

    def __init__(self, lr: float = 1.0, momentum: float = 0.0):
        self.lr, self.momentum = float(lr), float(momentum)

    def step(self, x, delta, state):
        if self.momentum:
            v = state.get("momentum")
            v = delta.clone() if v is None else v.mul_(self.momentum).add_(delta)
            state["momentum"] = v
            delta = v
        return x + delta if self.lr == 1.0 else x + self.lr * delta


class ServerAdaptive(ServerOptimizer):
    """FedAdagrad, FedYogi and FedAdam: Reddi et al. 2021, Algorithm 2, as written.

    With ``delta_t`` the aggregated update of round t::

        m_t = beta1 * m_{t-1} + (1 - beta1) * delta_t
        v_t = v_{t-1} + delta_t^2                                         (adagrad)
        v_t = v_{t-1} - (1 - beta2) * delta_t^2 * sign(v_{t-1} - delta_t^2)   (yogi)
        v_t = beta2 * v_{t-1} + (1 - beta2) * delta_t^2                   (adam)
        x_{t+1} = x_t + lr * m_t / (sqrt(v_t) + tau)

    starting from ``m_{-1} = 0`` and ``v_{-1} = tau^2`` (the algorithm asks for
    ``v_{-1} >= tau^2``), with no bias correction (the paper has none; Flower's
    FedAdam adds one).
    """

    KINDS = ("adagrad", "yogi", "adam")

    def __init__(self, kind: str, *, lr: float, beta1: float = 0.9, beta2: float = 0.99,
                 tau: float = 1e-3):
        if kind not in self.KINDS:
            raise ValueError(f"kind must be one of {', '.join(self.KINDS)}; got {kind!r}")
        self.kind, self.lr, self.beta1, self.beta2, self.tau = kind, lr, beta1, beta2, tau

    def step(self, x, delta, state):
        m, v = state.get("m"), state.get("v")
        if m is None:
            m = torch.zeros_like(delta)
            v = torch.full_like(delta, self.tau ** 2)
        m.mul_(self.beta1).add_(delta, alpha=1 - self.beta1)
        d2 = delta * delta
        if self.kind == "adagrad":
            v.add_(d2)
        elif self.kind == "yogi":
            v.sub_((1 - self.beta2) * d2 * torch.sign(v - d2))
        else:
            v.mul_(self.beta2).add_(d2, alpha=1 - self.beta2)
        state["m"], state["v"] = m, v
        return x + self.lr * m / (v.sqrt() + self.tau)
