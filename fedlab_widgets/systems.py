"""Imperfect clients: dropouts and stragglers, decided per round from the seed.

Real federations are not the simulation's perfect clients. Two failures matter most:

* **dropouts**: a sampled client never reports (it went offline, its battery died).
  With ``dropout=p`` each sampled client fails with probability ``p``; the round
  aggregates the survivors and records who dropped.
* **stragglers**: a sampled client is too slow to finish its ``local_epochs`` before
  the round's deadline. With ``stragglers=s`` each surviving client is a straggler
  with probability ``s`` and can do only a fraction of its local steps, drawn
  uniformly from ``straggler_work`` (its first steps, in its usual data order).
  What the server does with a straggler is ``straggler_mode``:

  ``"drop"``
      ignore it (FedAvg as deployed by McMahan et al. 2017, the FedProx paper's
      baseline);
  ``"partial"``
      aggregate its partial work (FedProx, Li et al. 2020; FedNova then normalises
      each update by its own number of steps, Wang et al. 2020);
  ``"auto"`` (default)
      ``"drop"`` for plain FedAvg, ``"partial"`` for every other algorithm.

Every draw comes from ``(seed, round)``, so the same seed gives the same failures.

:data:`SYSTEM_PARAMETERS` are these settings' rows of the run table
(:data:`fedlab_widgets.config.RUN_PARAMETERS`), which :class:`~fedlab_widgets.Simulation`,
the dashboard and the command line read.

Examples
--------
>>> fate = client_fates([3, 5, 8, 13], round_=1, seed=0, dropout=0.5, stragglers=0.5)
>>> sorted(fate.dropped + fate.stragglers + fate.full) == [3, 5, 8, 13]
True
>>> all(0.1 <= fate.work[k] <= 1.0 for k in fate.stragglers)
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .engines import Schedule
from .config import STRAGGLER_MODES, run_parameter
from .params import Param, check_params
from .seeds import generator

__all__ = ["SYSTEM_PARAMETERS", "STRAGGLER_MODES", "ClientFates", "client_fates",
           "check_system", "truncate_schedule"]

SYSTEM_NAMES = ("dropout", "stragglers", "straggler_work", "straggler_mode")
#: the systems settings, as the run table (:data:`fedlab_widgets.config.RUN_PARAMETERS`) declares them
SYSTEM_PARAMETERS: tuple[Param, ...] = tuple(run_parameter(n) for n in SYSTEM_NAMES)


@dataclass
class ClientFates:
    """What happens to each sampled client in one round.

    ``dropped``: never report. ``stragglers``: report after only ``work[k]`` of
    their local steps (a fraction in ``straggler_work``). ``full``: the others.
    """

    dropped: list[int] = field(default_factory=list)
    stragglers: list[int] = field(default_factory=list)
    full: list[int] = field(default_factory=list)
    work: dict[int, float] = field(default_factory=dict)


def check_system(*, dropout=0.0, stragglers=0.0, straggler_work=(0.1, 1.0),
                 straggler_mode="auto") -> dict:
    """The settings checked against the run table (ValueError naming the bad one and its
    range), as a dict."""
    return check_params("the simulation", SYSTEM_PARAMETERS,
                        dict(dropout=dropout, stragglers=stragglers,
                             straggler_work=straggler_work, straggler_mode=straggler_mode))


def client_fates(clients, *, round_: int, seed: int, dropout: float = 0.0,
                 stragglers: float = 0.0, straggler_work=(0.1, 1.0)) -> ClientFates:
    """Draw, for round ``round_``, which of ``clients`` drop out and which straggle.

    Each client's fate is drawn from ``(seed, round_, client)``: whether a client
    drops does not depend on who else was sampled.
    """
    if not dropout and not stragglers:   # the common case: no generators to seed each round
        return ClientFates(full=[int(k) for k in clients])
    fates = ClientFates()
    lo, hi = straggler_work
    for k in clients:
        u = torch.rand(3, generator=generator(seed, 5, round_, int(k)), dtype=torch.float64)
        if float(u[0]) < dropout:
            fates.dropped.append(int(k))
        elif float(u[1]) < stragglers:
            fates.stragglers.append(int(k))
            fates.work[int(k)] = lo + (hi - lo) * float(u[2])
        else:
            fates.full.append(int(k))
    return fates


def truncate_schedule(schedule: Schedule, work: dict[int, float]) -> Schedule:
    """``schedule`` with client ``k`` doing only its first ``ceil(work[k] * steps)`` steps
    (at least one); the other clients and every client's weight are unchanged (``schedule``
    itself when ``work`` is empty).

    Examples
    --------
    >>> import torch
    >>> s = Schedule([0, 1], [torch.arange(10), torch.arange(10)], [[2] * 5, [2] * 5], [10, 10])
    >>> truncate_schedule(s, {1: 0.4}).steps.tolist()
    [5, 2]
    """
    if not work:
        return schedule
    indices, sizes = [], []
    for row, k in enumerate(schedule.clients):
        bs = schedule.batch_sizes[row]
        if k in work:
            t = max(1, min(len(bs), math.ceil(work[k] * len(bs))))
            bs = bs[:t]
        indices.append(schedule.indices[row][:sum(bs)])
        sizes.append(bs)
    return Schedule(list(schedule.clients), indices, sizes, schedule.weights.tolist())
