"""FedPer: the base layers are federated, each client's head stays on the client.

Arivazhagan et al. 2019, "Federated Learning with Personalization Layers": every
client keeps its own copy of the last layer (the *head*). In a round a sampled
client starts from the global base and **its own** head, trains both, sends only
the base's update, and keeps its new head. The server averages base updates as
FedAvg does; it never sees a head. A client's model is the global base with its
head: that is what it is evaluated with (a client never sampled still has the
initial head).
"""

from __future__ import annotations

import torch

from ..engines.base import ClientUpdates

__all__ = ["PrivateHead", "head_slice"]


def head_slice(layout) -> slice:
    """The flat coordinates of the model's last layer (its last weight and bias)."""
    n = len(layout.shapes)
    first = n - 2 if n >= 2 and len(layout.shapes[-1]) == 1 else n - 1
    if first <= 0:
        raise ValueError("fedper needs a model with at least two layers: the last one is the "
                         "personal head, the others are federated (the logreg model has one)")
    return slice(layout.offsets[first], layout.size)


class PrivateHead:
    """FedPer's pieces: each client's start point, and keeping its head from the server."""

    store_key = "personal_head"

    def start(self, clients, ctx) -> torch.Tensor:
        """``[M, D]``: the global model with each client's own head (the initial head
        for a client never sampled)."""
        h = ctx.head
        out = ctx.x.unsqueeze(0).repeat(len(clients), 1)
        for i, k in enumerate(clients):
            row = ctx.store.get(self.store_key, k)
            if row is not None:
                out[i, h] = row
        return out

    def keep_heads(self, updates: ClientUpdates, ctx, start: torch.Tensor) -> ClientUpdates:
        """Store each client's trained head; zero the head's coordinates of what is sent."""
        h = ctx.head
        ctx.store.scatter(self.store_key, updates.clients, start[:, h] + updates.delta[:, h])
        delta = updates.delta.clone()
        delta[:, h] = 0
        return updates.replace(delta=delta)

    def personal_model(self, client: int, x: torch.Tensor, store, head: slice) -> torch.Tensor:
        """Client ``client``'s model: ``x`` with its own head (flat ``[D]``)."""
        row = store.get(self.store_key, client)
        if row is None:
            return x
        out = x.clone()
        out[head] = row
        return out
