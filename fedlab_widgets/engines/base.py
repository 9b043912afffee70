"""What every engine receives and returns: a schedule, a local rule, client updates.

An engine says *how* the sampled clients train (one after another, or all at
once); it never decides *what* happens to their results. It receives

* the global parameters ``x`` as one flat vector ``[D]`` (:class:`FlatLayout`
  maps it to the model's layers),
* the round's :class:`Schedule`: for each client, its minibatches in order,
* a :class:`LocalRule`: plain SGD, or SGD with a correction added to every
  local gradient (FedProx's proximal term, SCAFFOLD's control variates),

and returns :class:`ClientUpdates`: per-client updates ``delta [M, D]``
(``x_k - x``), with each client's weight (sample count), number of local steps
and mean training loss. Aggregation, server optimisers and every later step
work on that tensor, whatever the engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

__all__ = ["FlatLayout", "Schedule", "LocalRule", "ClientUpdates"]


class FlatLayout:
    """Where each parameter of a model lives in one flat vector of length ``D``.

    Examples
    --------
    >>> from fedlab_widgets import get_model
    >>> layout = FlatLayout(get_model("2nn"))
    >>> layout.size
    199210
    >>> x = layout.flatten(get_model("2nn").parameters())
    >>> [tuple(v.shape) for v in layout.views(x)][:2]
    [(200, 784), (200,)]
    """

    def __init__(self, model: nn.Module):
        params = list(model.parameters())
        self.names = [n for n, _ in model.named_parameters()]
        self.shapes = [tuple(p.shape) for p in params]
        self.numels = [p.numel() for p in params]
        self.offsets = [0]
        for n in self.numels:
            self.offsets.append(self.offsets[-1] + n)
        self.size = self.offsets[-1]
        self.dtype = params[0].dtype if params else torch.float32

    def flatten(self, tensors) -> torch.Tensor:
        """One new flat vector ``[D]`` from per-layer tensors (in the model's order)."""
        return torch.cat([t.detach().reshape(-1) for t in tensors])

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Per-layer views of ``flat`` (``[D]`` or ``[M, D]``): writing them writes ``flat``."""
        lead = flat.shape[:-1]
        return [flat[..., a:b].view(*lead, *s)
                for a, b, s in zip(self.offsets[:-1], self.offsets[1:], self.shapes)]


class Schedule:
    """The minibatch schedule of one round: which samples each client trains on, in order.

    Rows are ordered by number of local steps, longest first (then by batch size,
    then as given), so that the clients still training at step ``t`` are a prefix
    of the rows; ``clients`` gives each row's client id. Row ``i``'s minibatches
    are consecutive slices of ``indices[i]`` of the sizes ``batch_sizes[i]``.

    Parameters
    ----------
    clients : list of int
    indices : list of LongTensor
        Per client, the sample indices of all its minibatches, concatenated.
    batch_sizes : list of list of int
        Per client, the size of each minibatch (summing to ``len(indices[i])``).
    weights : list of float
        Per client, its weight in the average (its number of training samples).
    """

    def __init__(self, clients, indices, batch_sizes, weights):
        n = len(clients)
        if not (len(indices) == len(batch_sizes) == len(weights) == n) or n == 0:
            raise ValueError("a schedule needs at least one client, and one entry per client "
                             "in indices, batch_sizes and weights")
        for ix, bs in zip(indices, batch_sizes):
            if not bs or sum(bs) != len(ix) or min(bs) < 1:
                raise ValueError("each client's batch sizes must be >= 1 and sum to its indices")
        order = sorted(range(n), key=lambda i: (-len(batch_sizes[i]), -max(batch_sizes[i])))
        self.clients = [int(clients[i]) for i in order]
        self.indices = [indices[i] for i in order]
        self.batch_sizes = [list(batch_sizes[i]) for i in order]
        self.weights = torch.tensor([float(weights[i]) for i in order], dtype=torch.float64)
        self.steps = torch.tensor([len(b) for b in self.batch_sizes], dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.clients)

    def batches(self, row: int):
        """Row ``row``'s minibatches (index tensors), in order."""
        return self.indices[row].split(self.batch_sizes[row])

    @classmethod
    def from_orders(cls, clients, orders, *, batch_size: int | None, weights=None) -> "Schedule":
        """Minibatches cut from per-client sample orders (one per local epoch).

        ``orders[i]`` lists client ``i``'s shuffled indices for each epoch; each
        epoch is cut into consecutive batches of ``min(batch_size, n)`` samples, the
        last one smaller (``batch_size=None``: one full batch per epoch).
        """
        indices, sizes, ws = [], [], []
        for i, epochs in enumerate(orders):
            n = len(epochs[0])
            b = n if batch_size is None else min(batch_size, n)
            nb = math.ceil(n / b)
            per_epoch = [b] * (nb - 1) + [n - (nb - 1) * b]
            indices.append(torch.cat(list(epochs)))
            sizes.append(per_epoch * len(epochs))
            ws.append(n if weights is None else weights[i])
        return cls(clients, indices, sizes, ws)


@dataclass
class LocalRule:
    """How a client's SGD step differs from plain SGD: a correction to every gradient.

    At every local step a client at ``w`` with minibatch gradient ``g`` moves to
    ``w - lr * (g + mu * (w - x) + c)``, where ``x`` is the global model of the
    round and ``c`` a per-client constant:

    * ``mu`` is FedProx's proximal weight (the gradient of ``mu/2 ||w - x||^2``);
    * ``correction`` (``[M, D]``, one row per schedule row, or None) is SCAFFOLD's
      ``c - c_k``.

    ``transform`` (or None) changes what a client trains on: engines call
    ``transform(rows, idx, x, y) -> (x, y)`` on every minibatch right after
    gathering it, with ``rows`` the slice of schedule rows in the batch, ``idx``
    ``[m, b]`` the sample indices, ``x`` ``[m, b, ...]`` the images and ``y``
    ``[m, b]`` the labels (an attacker's label flips and backdoor triggers).

    ``LocalRule()`` is plain SGD (FedAvg). Engines call :meth:`correct_` after
    computing the gradients at ``w`` and before adding them, so that both terms
    are evaluated at the same point.
    """

    mu: float = 0.0
    correction: torch.Tensor | None = None
    transform: Callable | None = None

    @property
    def has_correction(self) -> bool:
        return self.mu != 0.0 or self.correction is not None

    def correct_(self, w: list[torch.Tensor], x: list[torch.Tensor],
                 c: list[torch.Tensor] | None, lr: float) -> None:
        """In place: ``w -= lr * (mu * (w - x) + c)`` for each tensor of the lists.

        ``x`` broadcasts against ``w`` (one global model, ``m`` client rows).
        """
        if self.mu:
            for wi, xi in zip(w, x):
                wi.lerp_(xi.expand_as(wi), lr * self.mu)  # w + lr*mu*(x - w)
        if c is not None:
            for wi, ci in zip(w, c):
                wi.sub_(ci, alpha=lr)


@dataclass
class ClientUpdates:
    """What local training produced, one row per client (in :class:`Schedule` order).

    Attributes
    ----------
    clients : list of int
        Client id of each row.
    delta : Tensor ``[M, D]``
        ``x_k - x``: each client's model minus the global model, flat. Steps may
        replace it (clip, compress, attack); it may be a buffer the engine reuses,
        so a step that keeps it beyond the round must keep a copy.
    weight : float64 Tensor ``[M]``
        Each client's number of training samples (FedAvg's weights).
    steps : int64 Tensor ``[M]``
        Local SGD steps each client took.
    loss : float64 Tensor ``[M]``
        Each client's mean minibatch training loss.
    masked : object, optional
        Under secure aggregation, what the server receives instead of ``delta``
        (a :class:`fedlab_widgets.secagg.SecureSum`; ``delta`` is then None).
    """

    clients: list[int]
    delta: torch.Tensor | None
    weight: torch.Tensor
    steps: torch.Tensor
    loss: torch.Tensor
    masked: object = None

    def __len__(self) -> int:
        return len(self.clients)

    def replace(self, **changes) -> "ClientUpdates":
        """A copy with some fields replaced (the others shared)."""
        return ClientUpdates(**{**self.__dict__, **changes})
