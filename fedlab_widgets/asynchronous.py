"""Asynchronous FL on the simulated clock: FedAsync and FedBuff, driven by an event queue.

A synchronous server waits for the slowest client of every round. An asynchronous one keeps
``clients_per_round`` clients training at all times (the *concurrency*); each downloads the
model version current when it starts, trains on it (its real local steps, timed by its device,
:mod:`fedlab_widgets.clock`) and reports when it is done, by then perhaps ``tau`` versions late
(its *staleness*). A slot that frees is filled at once from the idle, available clients.

``fedasync`` (Xie, Koyejo & Gupta 2019, "Asynchronous federated optimization")
    every arrival makes a new version: ``x <- (1 - a_t) x + a_t x_k`` with
    ``a_t = mixing * s(tau)``, so one round (one version) is one update.
``fedbuff`` (Nguyen et al., AISTATS 2022, "Federated learning with buffered asynchronous
    aggregation")
    arrivals go into a buffer, each update (``x_k - x_tau``, its progress on the version it
    started from) scaled by ``s(tau)``; after ``buffer_size`` = K arrivals the server steps
    ``x <- x + server_lr * mean`` (weighted by the clients' sample counts, as FedAvg's) and
    empties the buffer: one round is one such step.

The staleness weight ``s`` is Xie et al.'s: ``constant`` (1), ``polynomial``
``(1 + tau) ** -staleness_a`` (FedBuff's ``1 / sqrt(1 + tau)`` at a = 0.5) or ``hinge`` (1 up to
``staleness_b`` versions late, then ``1 / (a (tau - b) + 1)``). Arrivals at the same instant are
taken together (in client order) before the slots refill, so with equally fast clients and
``buffer_size`` = clients per round, FedBuff is synchronous FedAvg, bit for bit (the tests).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import torch

from .history import RoundRecord
from .round import divergence, local_training, measure, round_context, server_half
from .seeds import generator
from .threads import torch_threads

__all__ = ["STALENESS", "staleness_weight", "asynchronous_kind", "check_asynchronous",
           "play_async_round"]

STALENESS = ("constant", "polynomial", "hinge")


def staleness_weight(tau: int, *, kind: str = "polynomial", a: float = 0.5, b: float = 4.0) -> float:
    """Xie et al.'s ``s(tau)``: how much an update ``tau`` versions late counts.

    Examples
    --------
    >>> staleness_weight(3), staleness_weight(3, kind="hinge", b=4), staleness_weight(6, kind="hinge", a=1, b=4)
    (0.5, 1.0, 0.3333333333333333)
    """
    if kind == "constant":
        return 1.0
    if kind == "polynomial":
        return float((1.0 + tau) ** -a)
    if kind == "hinge":
        return 1.0 if tau <= b else 1.0 / (a * (tau - b) + 1.0)
    raise ValueError(f"staleness must be one of {', '.join(STALENESS)}; got {kind!r}")


def asynchronous_kind(algorithm) -> str | None:
    """``"fedasync"``, ``"fedbuff"`` or None (a synchronous algorithm)."""
    from .algorithms import ALGORITHMS
    return ALGORITHMS.trait(algorithm.name, "asynchronous", None)


def check_asynchronous(sim) -> None:
    """What an asynchronous run cannot go with is refused, naming it."""
    name = sim.algorithm.name
    if sim.devices is None:
        raise ValueError(f"{name} needs devices (the clock that decides who reports when): set devices "
                         "to a preset (uniform, phones) or a table")
    clash = [(sim.deadline is not None, "deadline", "a round of its own has no deadline"),
             (sim.selection not in ("uniform", "available"), f"selection={sim.selection!r}",
              "its free slots are filled from the idle, available clients"),
             (bool(sim.dropout or sim.stragglers), "dropout and stragglers",
              "the devices' speeds make the slow clients"),
             (sim.attack is not None, "an attack", "not modelled asynchronously"),
             (sim.compression is not None, "compression", "not modelled asynchronously"),
             (sim.algorithm.dp is not None or sim.algorithm.secagg is not None,
              "differential privacy and secure aggregation", "their rounds are synchronous")]
    for bad, what, why in clash:
        if bad:
            raise ValueError(f"{name} cannot be combined with {what}: {why}")
    k = sim.algorithm.params.get("buffer_size")
    if k is not None and k > sim.num_clients:
        raise ValueError(f"buffer_size must be an integer from 1 to {sim.num_clients} (the clients); got {k}")


@dataclass(frozen=True)
class Flight:
    """A client training: from which version, when it reports, what it will send."""

    client: int
    version: int
    finish: float
    delta: torch.Tensor      # x_k - x_version
    start: torch.Tensor      # x_version (shared by the clients that started together)
    weight: float
    samples: int
    steps: int
    loss: float


@dataclass(frozen=True)
class AsyncState:
    """The event queue between rounds (replaced, never changed, so a round can be undone)."""

    now: float = 0.0
    version: int = 0
    flights: tuple = ()
    buffer: tuple = ()       # (Flight, staleness) arrived, not yet aggregated
    started: tuple = ()      # clients started during the round being played


def _fill(sim, r: int, state: AsyncState, x: torch.Tensor, j: int) -> AsyncState:
    """Start idle, available clients on version ``state.version`` until every slot is busy."""
    free = sim.clients_per_round - len(state.flights)
    if free <= 0:
        return state
    busy = {f.client for f in state.flights}
    on = sim.devices.available(state.now)
    g = generator(sim.seed, 1, r) if j == 0 else generator(sim.seed, 16, r, j)
    order = torch.randperm(sim.num_clients, generator=g).tolist()
    group = sorted([k for k in order if k not in busy and on[k]][:free])
    if not group:
        return state
    ctx = round_context(sim, r, x)
    updates, schedule = local_training(sim, r, ctx, group, {})
    down, up = sim.bytes_per_client()
    rows = {k: i for i, k in enumerate(updates.clients)}
    samples = {k: len(ix) for k, ix in zip(schedule.clients, schedule.indices)}
    secs = sim.devices.times(group, samples=[samples[k] for k in group], bytes_down=down, bytes_up=up)
    new = tuple(Flight(k, state.version, state.now + float(t), updates.delta[rows[k]].clone(), x,
                       float(updates.weight[rows[k]]), samples[k], int(updates.steps[rows[k]]),
                       float(updates.loss[rows[k]]))
                for k, t in zip(group, secs))
    return replace(state, flights=state.flights + new, started=state.started + tuple(group))


def _arrive(state: AsyncState) -> AsyncState:
    """Every client that reports at the next instant, into the buffer (in client order)."""
    t = min(f.finish for f in state.flights)
    now = sorted((f for f in state.flights if f.finish == t), key=lambda f: f.client)
    rest = tuple(f for f in state.flights if f.finish != t)
    arrived = tuple((f, state.version - f.version) for f in now)
    return replace(state, now=t, flights=rest, buffer=state.buffer + arrived)


def _updates(sim, kind: str, taken, x: torch.Tensor):
    """The buffered reports as one round's updates for :func:`~fedlab_widgets.round.server_half`."""
    from .engines.base import ClientUpdates
    p = sim.algorithm.params
    s = [staleness_weight(tau, kind=p["staleness"], a=p["staleness_a"], b=p["staleness_b"])
         for _, tau in taken]
    if kind == "fedasync":     # mix the client's model into the current one: a_t (x_k - x)
        rows = [p["mixing"] * w * (f.start + f.delta - x) for (f, _), w in zip(taken, s)]
    else:
        rows = [f.delta if w == 1.0 else w * f.delta for (f, _), w in zip(taken, s)]
    fl = [f for f, _ in taken]
    return ClientUpdates(clients=[f.client for f in fl], delta=torch.stack(rows),
                         weight=torch.tensor([f.weight for f in fl], dtype=torch.float64),
                         steps=torch.tensor([f.steps for f in fl], dtype=torch.int64),
                         loss=torch.tensor([f.loss for f in fl], dtype=torch.float64))


def _next_version(sim, r: int, kind: str, x: torch.Tensor):
    """Run the event queue until the server makes version ``r``: (state, reports taken)."""
    state = sim.server_state.get("async") or AsyncState()
    state = replace(state, started=())
    k = 1 if kind == "fedasync" else (sim.algorithm.params["buffer_size"] or sim.clients_per_round)
    j = 0
    while len(state.buffer) < k:
        state = _fill(sim, r, state, x, j)
        j += 1
        if not state.flights:     # nobody could start: wait for a device to come online
            wake = sim.devices.next_available(state.now)
            state = replace(state, now=wake if wake > state.now else state.now + 60.0)
            continue
        state = _arrive(state)
    return state, state.buffer[:k], state.buffer[k:]


def play_async_round(sim, r: int, *, evaluate: bool, estimate: bool = False) -> RoundRecord:
    """Round ``r`` of an asynchronous run: events until the server makes its next version."""
    t0, kind = time.perf_counter(), asynchronous_kind(sim.algorithm)
    params = list(sim.global_model.parameters())
    before = (sim.server_state.get("async") or AsyncState()).now
    with torch_threads(sim.num_threads), torch.no_grad():
        x = sim.layout.flatten(params)
        state, taken, left = _next_version(sim, r, kind, x)
        updates = _updates(sim, kind, taken, x)
        ctx = round_context(sim, r, x)
        x_new = server_half(sim.algorithm, updates, ctx)
        p = updates.weight / updates.weight.sum()
        train_loss = float((p * updates.loss).sum())
        update_norm = float(torch.stack([f.delta for f, _ in taken]).norm(dim=1).double().mean())
        finite = bool(torch.isfinite(x_new).all()) and math.isfinite(train_loss)
        if finite:
            torch._foreach_copy_(params, sim.layout.views(x_new))
            sim.server_state["async"] = replace(state, version=r, buffer=left)
        acc, loss, asr, per_client, size = measure(sim, evaluate_all=finite and evaluate,
                                                   estimate=finite and estimate)
    if not finite:
        sim.history.stop_reason = divergence(sim, r, train_loss)
    down, up = sim.bytes_per_client()
    fl = [f for f, _ in taken]
    return RoundRecord(round=r, accuracy=acc, loss=loss, train_loss=train_loss,
                       clients=sorted(f.client for f in fl), bytes_down=down * len(state.started),
                       bytes_up=up * len(fl), seconds=time.perf_counter() - t0,
                       samples=sum(f.samples for f in fl), update_norm=update_norm,
                       reported=len(fl), client_accuracy=per_client, eval_size=size,
                       sim_seconds=state.now - before,
                       staleness=[tau for _, tau in sorted(taken, key=lambda ft: ft[0].client)])
