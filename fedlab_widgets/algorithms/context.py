"""What a round's steps see: the round's context, and the per-client state kept across rounds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

__all__ = ["ClientStore", "RoundContext"]


class ClientStore:
    """Per-client state that persists across rounds, created when a client is first sampled.

    ``gather(name, clients, size)`` returns one row per client (zeros for a client
    seen for the first time); ``scatter(name, clients, rows)`` keeps new rows.
    Nothing is allocated for clients never sampled.

    Examples
    --------
    >>> import torch
    >>> store = ClientStore()
    >>> store.gather("c", [3, 7], 2)
    tensor([[0., 0.],
            [0., 0.]])
    >>> store.scatter("c", [7], torch.ones(1, 2))
    >>> store.gather("c", [3, 7], 2)[1]
    tensor([1., 1.])
    >>> len(store)
    1
    """

    def __init__(self):
        self._data: dict[str, dict[int, torch.Tensor]] = {}
        self._staged: dict[str, dict[int, torch.Tensor]] | None = None

    # -- a round's writes are kept apart until the round is recorded ------------------------
    def begin(self) -> None:
        """Hold new rows apart (a round in progress) until :meth:`commit` or :meth:`rollback`."""
        self._staged = {}

    def commit(self) -> None:
        """Keep the rows written since :meth:`begin`."""
        for name, rows in (self._staged or {}).items():
            self._data.setdefault(name, {}).update(rows)
        self._staged = None

    def rollback(self) -> None:
        """Forget the rows written since :meth:`begin` (an interrupted round)."""
        self._staged = None

    def _row(self, name: str, k: int):
        if self._staged is not None and k in self._staged.get(name, {}):
            return self._staged[name][k]
        return self._data.get(name, {}).get(k)

    def gather(self, name: str, clients: Sequence[int], size: int,
               dtype=torch.float32) -> torch.Tensor:
        out = torch.zeros(len(clients), size, dtype=dtype)
        for i, k in enumerate(clients):
            row = self._row(name, int(k))
            if row is not None:
                out[i] = row
        return out

    def scatter(self, name: str, clients: Sequence[int], rows: torch.Tensor) -> None:
        table = (self._data if self._staged is None else self._staged).setdefault(name, {})
        for i, k in enumerate(clients):
            table[int(k)] = rows[i].clone()

    def get(self, name: str, client: int) -> torch.Tensor | None:
        """Client ``client``'s row ``name``, or None if it has none yet."""
        return self._row(name, int(client))

    def clients(self, name: str) -> list[int]:
        """The clients that have a row ``name``."""
        staged = (self._staged or {}).get(name, {})
        return sorted(set(self._data.get(name, {})) | set(staged))

    def __len__(self) -> int:
        """Number of clients with any state."""
        tables = [*self._data.values(), *(self._staged or {}).values()]
        return len(set().union(*[set(t) for t in tables])) if tables else 0


@dataclass
class RoundContext:
    """What the steps of a round may read, and where they keep state.

    Attributes
    ----------
    round : int
    x : Tensor [D]
        The global model at the start of the round (flat; do not modify).
    lr : float
        The clients' learning rate.
    num_clients : int
        K, all clients (not only the sampled ones).
    total_samples : int
        All clients' training samples together.
    max_samples : int
        The largest client's training samples (0: not known).
    state : dict
        Server-side state kept across rounds (server optimiser moments, SCAFFOLD's c).
    store : ClientStore
        Per-client state kept across rounds (SCAFFOLD's c_k).
    seed : int
        The simulation's seed (derive a generator from it with the round for randomness).
    clients_per_round : int
        m, the number of clients sampled each round (DP-FedAvg's fixed denominator).
    head : slice, optional
        The flat coordinates of the model's last layer (FedPer's personal head).
    start : Tensor [M, D], optional
        Where each client started this round, when not from ``x`` (FedPer, IFCA).
    client_loss : callable, optional
        ``client_loss(models [J, D], clients) -> [J, M]``: each client's mean training
        loss at each flat model, computed where the clients' data are (q-FFL's
        ``F_k(x)``, IFCA's choice of cluster). None where no client can be asked (a
        Flower server).
    train : callable, optional
        ``train(schedule, rule, start) -> ClientUpdates``: more local training of the
        round's clients with the round's ``lr`` (Ditto's personal models).
    layout : FlatLayout, optional
        Where each layer lives in the flat vectors (IFCA draws its cluster models with it).
    clusters : LongTensor [M], optional
        IFCA: the cluster model each client of the round trained, in schedule order.
    observed : dict
        What the round's steps measured, for its record, not kept across rounds (DP: the
        ``clip_norm`` used and the share of updates ``clipped``).
    """

    round: int
    x: torch.Tensor
    lr: float
    num_clients: int
    total_samples: int
    state: dict = field(default_factory=dict)
    store: ClientStore = field(default_factory=ClientStore)
    seed: int = 0
    clients_per_round: int = 1
    head: slice | None = None
    max_samples: int = 0
    reporting: int = 0        # updates aggregated this round (set by the round's server half)
    start: torch.Tensor | None = None
    client_loss: Callable | None = None
    train: Callable | None = None
    clusters: torch.Tensor | None = None
    layout: object = None
    observed: dict = field(default_factory=dict)
