"""The wire between parties: every tensor that crosses it is copied and counted.

Vertical FL and split learning run in one process here, but no autograd graph crosses
a party's boundary: a party sends a tensor through a :class:`Channel`, which hands the
receiver a detached copy and counts its bytes (the tensor's own element size: 4 bytes a
float32 entry) per sender, receiver and kind ("activations", "gradients", "weights").
What a party knows is what it computed or received, as on a real network.

Examples
--------
>>> ch = Channel()
>>> got = ch.send(torch.ones(5, 3), sender="left", receiver="label holder", kind="activations")
>>> got.requires_grad, ch.bytes()
(False, 60)
>>> ch.bytes(sender="left"), ch.bytes(kind="gradients")
(60, 0)
>>> ch.table()
[{'sender': 'left', 'receiver': 'label holder', 'kind': 'activations', 'messages': 1, 'bytes': 60}]
"""

from __future__ import annotations

from collections import defaultdict

import torch

__all__ = ["Channel"]


class Channel:
    """Copies tensors from one party to another and counts what it carried.

    Attributes
    ----------
    steps : list of int
        The cumulative bytes after each :meth:`tick` (one per training step).
    """

    def __init__(self):
        self._bytes = defaultdict(int)
        self._messages = defaultdict(int)
        self.steps: list[int] = []

    def send(self, tensor: torch.Tensor, *, sender: str, receiver: str, kind: str) -> torch.Tensor:
        """The receiver's copy of ``tensor`` (detached, no gradient), counted."""
        key = (sender, receiver, kind)
        self._bytes[key] += tensor.numel() * tensor.element_size()
        self._messages[key] += 1
        return tensor.detach().clone()

    def send_state(self, module: torch.nn.Module, *, sender: str, receiver: str,
                   kind: str = "weights") -> dict:
        """The receiver's copy of a module's parameters and buffers (its state dict), counted."""
        return {k: self.send(v, sender=sender, receiver=receiver, kind=kind)
                for k, v in module.state_dict().items()}

    def tick(self) -> None:
        """Mark the end of a training step (for :attr:`steps`)."""
        self.steps.append(self.bytes())

    def bytes(self, *, sender: str | None = None, receiver: str | None = None,
              kind: str | None = None) -> int:
        """Bytes carried so far, of every message or of those matching the filters."""
        return sum(b for (s, r, k), b in self._bytes.items()
                   if sender in (None, s) and receiver in (None, r) and kind in (None, k))

    def by_party(self) -> dict[str, dict[str, int]]:
        """For every party: the bytes it ``sent`` and ``received``."""
        out: dict[str, dict[str, int]] = {}
        for (s, r, _), b in self._bytes.items():
            out.setdefault(s, {"sent": 0, "received": 0})["sent"] += b
            out.setdefault(r, {"sent": 0, "received": 0})["received"] += b
        return out

    def table(self) -> list[dict]:
        """One row per (sender, receiver, kind): messages and bytes."""
        return [{"sender": s, "receiver": r, "kind": k, "messages": self._messages[(s, r, k)],
                 "bytes": b} for (s, r, k), b in self._bytes.items()]
