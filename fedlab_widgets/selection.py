"""Client selection: which clients a round asks to train.

``selection`` (a run setting) is one of :data:`SELECTIONS`:

``"uniform"`` (default)
    ``clients_per_round`` clients uniformly at random without replacement, whoever they are
    (McMahan et al. 2017). With devices, a sampled client outside its availability window
    never checks in and is dropped.
``"available"``
    uniformly among the clients available at the round's start (devices needed): what a
    deployed server does, since only available devices check in.
``"power_of_choice"``
    Cho, Wang & Joshi (2022), "Towards understanding biased client selection in federated
    learning" (AISTATS; the 2020 preprint's power-of-choice): sample ``candidates`` = d clients
    without replacement with probability proportional to their data size, compute each
    candidate's local loss at the global model, keep the ``clients_per_round`` with the
    highest. ``candidates`` defaults to twice the clients per round; d = m is uniform
    size-weighted sampling, a large d keeps only the hardest clients (the paper's bias).
``"fast_first"``
    among ``candidates`` available clients drawn uniformly (default: all available), keep the
    ``clients_per_round`` whose round would be fastest (devices needed): a deadline-aware
    server that never waits for slow devices, and never learns their data.

Each draw comes from ``(seed, round)``, so the same seed selects the same clients.
"""

from __future__ import annotations

import numpy as np
import torch

from .config import SELECTIONS
from .seeds import generator

__all__ = ["SELECTIONS", "select_clients", "check_selection"]

_NEEDS_DEVICES = ("available", "fast_first")


def check_selection(selection: str, candidates, devices, *, clients_per_round: int,
                    num_clients: int) -> None:
    """Settings that cannot go together are refused, naming them."""
    if selection in _NEEDS_DEVICES and devices is None:
        raise ValueError(f"selection={selection!r} needs devices (who is available, how fast): set "
                         "devices to a preset (uniform, phones) or a table")
    if candidates is not None:
        if selection not in ("power_of_choice", "fast_first"):
            raise ValueError(f"candidates is for selection power_of_choice or fast_first; got "
                             f"selection={selection!r}")
        if not clients_per_round <= candidates <= num_clients:
            raise ValueError(f"candidates must be an integer from {clients_per_round} (the clients per "
                             f"round) to {num_clients} (the clients); got {candidates}")


def _uniform(pool: np.ndarray, m: int, g: torch.Generator) -> list[int]:
    order = torch.randperm(len(pool), generator=g)[:m].numpy()
    return sorted(int(k) for k in pool[order])


def select_clients(sim, r: int) -> list[int]:
    """Round ``r``'s clients under ``sim.selection`` (sorted); not ``"uniform"``, which
    :meth:`~fedlab_widgets.Simulation.sample_clients` draws itself."""
    m, g = sim.clients_per_round, generator(sim.seed, 14, r)
    everyone = np.arange(sim.num_clients)
    pool = everyone if sim.devices is None else everyone[sim.devices.available(sim.sim_time)]
    if not len(pool):
        return []
    if sim.selection == "available":
        return _uniform(pool, m, g)
    if sim.selection == "fast_first":
        d = len(pool) if sim.candidates is None else min(sim.candidates, len(pool))
        cand = np.array(_uniform(pool, d, g))
        down, up = sim.bytes_per_client()
        sizes = sim.partition.sizes.numpy()[cand] * sim.local_epochs
        t = sim.devices.times(cand, samples=sizes, bytes_down=down, bytes_up=up)
        return sorted(int(k) for k in cand[np.argsort(t, kind="stable")[:m]])
    # power of choice: d candidates by data size, the m with the highest local loss
    d = min(2 * m if sim.candidates is None else sim.candidates, len(pool))
    p = sim.partition.sizes.to(torch.float64)[torch.as_tensor(pool)]
    cand = pool[torch.multinomial(p / p.sum(), d, replacement=False, generator=g).numpy()]
    x = sim.layout.flatten(list(sim.global_model.parameters())).unsqueeze(0)
    with torch.no_grad():
        loss = sim.context().client_loss(x, [int(k) for k in cand])[0].numpy()
    order = np.argsort(-loss, kind="stable")[:m]
    return sorted(int(k) for k in cand[order])
