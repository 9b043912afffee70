"""One round of federated training: the pipeline the simulation and the Flower server share.

::

    clients  = sim.sample_clients(r)                # who takes part; dropouts, stragglers
    schedule = sim.make_schedule(r, clients)        # each client's minibatches, in order
    rule     = algorithm.local_rule(clients, ctx)   # plain SGD, FedProx, SCAFFOLD; attacks' data
    updates  = engine.train_clients(x, schedule, rule=rule)   # delta [M, D] = x_k - x
    x        = server_half(algorithm, updates, ctx) # client steps, aggregate, server steps, optimiser
    record   = evaluate(x), losses, honest bytes

:func:`server_half` is what the server does with a round's updates; the Flower server
(:mod:`fedlab_widgets.flower`) runs the same function on the updates its clients send.
:func:`play_round` is a whole simulated round. Nothing here imports the simulation: the
round is handed the simulation's state.
"""

from __future__ import annotations

import math
import time

import torch

from .algorithms import RoundContext
from .evaluation import client_losses
from .history import RoundRecord
from .clock import round_clock
from .systems import client_fates, truncate_schedule
from .threads import torch_threads

__all__ = ["server_half", "play_round", "play_whole_round", "round_context", "local_training",
           "measure", "divergence"]


def server_half(algorithm, updates, ctx: RoundContext, *, attack=None, malicious=frozenset(),
                compression=None) -> torch.Tensor:
    """The new global model ``x`` (flat) from a round's client updates.

    The attack's step (what malicious clients send), compression, the algorithm's client
    steps (SCAFFOLD's control variates, DP clipping, secure aggregation's masks), the
    aggregator, the server steps (DP noise) and the server optimiser, in that order.
    """
    ctx.reporting = len(updates)
    if attack is not None:
        updates = attack.client_step(updates, ctx, malicious)
    if compression is not None:
        updates = compression(updates, ctx)
    updates = algorithm.client_steps(updates, ctx)
    delta = algorithm.server_steps(algorithm.aggregate(updates), ctx)
    return algorithm.server_update(ctx.x, delta, ctx)


def round_context(sim, r: int, x: torch.Tensor) -> RoundContext:
    """What the steps of round ``r`` may read, and where they keep state; the clients'
    side: their loss at given models (on their training data), more local training."""
    def client_loss(models, clients):
        ix = [sim.partition.client_indices[k] for k in clients]
        return client_losses(sim.global_model, sim.layout, sim.train, ix, models)

    def train(schedule, rule, start):
        return sim.engine.train_clients(x, schedule, lr=sim.lr, rule=rule, start=start)

    return RoundContext(round=r, x=x, lr=sim.lr, num_clients=sim.num_clients,
                        total_samples=sim.total_samples, state=sim.server_state,
                        store=sim.client_store, seed=sim.seed,
                        clients_per_round=sim.clients_per_round, head=sim.head,
                        max_samples=sim.max_samples, client_loss=client_loss, train=train,
                        layout=sim.layout)


def _participants(sim, r: int):
    """Round ``r``'s sampled clients, their fates, who trains, its clock, and why nobody may."""
    clients = sim.sample_clients(r)
    fates = client_fates(clients, round_=r, seed=sim.seed, dropout=sim.dropout,
                         stragglers=sim.stragglers, straggler_work=sim.straggler_work)
    training = fates.full + (fates.stragglers if sim.straggler_mode == "partial" else [])
    clock = None
    if sim.devices is not None:   # who was offline or would miss the deadline: dropped
        clock = round_clock(sim, r, clients, training, fates.work)
        gone = set(clock.unavailable) | set(clock.late)
        fates.dropped = sorted(set(fates.dropped) | gone)
        fates.full = [k for k in fates.full if k not in gone]
        fates.stragglers = [k for k in fates.stragglers if k not in gone]
        training = [k for k in training if k not in gone]
    skipped = None
    if not training:
        skipped = "no client reported" if clock is None else (
            "every client missed the deadline" if clock.late else "no client was available")
    else:
        try:
            sim.algorithm.validate(len(training))
        except ValueError as e:
            skipped = f"too few clients reported for the aggregator ({e})"
    return clients, fates, training, skipped, clock


def local_training(sim, r: int, ctx: RoundContext, training, work: dict):
    """The sampled clients' local training: their updates and the schedule they followed."""
    alg = sim.algorithm
    schedule = truncate_schedule(sim.make_schedule(r, sorted(training)), work)
    ctx.start = alg.local_start(schedule.clients, ctx)
    alg.before_training(schedule, ctx)
    rule = alg.local_rule(schedule.clients, ctx)
    if sim.attack is not None:
        rule = sim.attack.local_rule(rule, schedule.clients, sim.malicious, sim.train)
    updates = sim.engine.train_clients(ctx.x, schedule, lr=sim.lr, rule=rule, start=ctx.start)
    return updates, schedule


def measure(sim, *, evaluate_all: bool, estimate: bool):
    """Accuracy and loss (whole test set, or the fixed subset), backdoor success, per client."""
    acc = loss = float("nan")
    if evaluate_all or estimate:
        acc, loss = sim.evaluate(sim.test if evaluate_all else sim.test_subset)
    asr = sim.attack.success_rate(sim.global_model, sim.test) \
        if evaluate_all and sim.attack is not None else float("nan")
    per_client = [float(a) for a in sim.client_accuracy()] \
        if evaluate_all and sim.local_test is not None else []
    size = len(sim.test.labels) if evaluate_all else sim.eval_subset if estimate else 0
    return acc, loss, asr, per_client, size


def divergence(sim, r: int, train_loss: float) -> str:
    what = f"the training loss became {train_loss}" if not math.isfinite(train_loss) \
        else "the global model became NaN or infinite"
    cause = (f"the {sim.attack.name} attack broke it" if sim.attack is not None else
             f"lr={sim.lr:g} is probably too large; try a smaller lr"
             + (" or server_lr" if "server_lr" in sim.algorithm.params else ""))
    return f"diverged at round {r}: {what} ({cause})"


def play_round(sim, r: int, *, evaluate: bool, estimate: bool = False) -> RoundRecord:
    """One simulated round ``r`` of ``sim`` (a :class:`~fedlab_widgets.Simulation`): its record.

    The global model changes only when the round's new model is finite; a diverging
    round keeps the last good model and sets ``history.stop_reason``.
    """
    t0 = time.perf_counter()
    alg = sim.algorithm
    params = list(sim.global_model.parameters())
    clients, fates, training, skipped, clock = _participants(sim, r)
    train_loss = update_norm = float("nan")
    finite, samples, clusters, observed = True, 0, [], {}
    with torch_threads(sim.num_threads), torch.no_grad():
        if skipped is None:
            ctx = round_context(sim, r, sim.layout.flatten(params))
            updates, schedule = local_training(sim, r, ctx, training, fates.work)
            samples = int(sum(len(ix) for ix in schedule.indices))
            if ctx.clusters is not None:     # IFCA: which cluster each client joined
                joined = dict(zip(schedule.clients, ctx.clusters.tolist()))
                clusters = [joined[k] for k in sorted(joined)]
            p = updates.weight / updates.weight.sum()
            train_loss = float((p * updates.loss).sum())
            update_norm = float(updates.delta.norm(dim=1).double().mean())
            finite = math.isfinite(train_loss) and math.isfinite(update_norm)
            if finite:
                x_new = server_half(alg, updates, ctx, attack=sim.attack,
                                    malicious=sim.malicious, compression=sim.compression)
                finite = bool(torch.isfinite(x_new).all())
            if finite:
                torch._foreach_copy_(params, sim.layout.views(x_new))
            observed = ctx.observed
        acc, loss, asr, per_client, size = measure(sim, evaluate_all=finite and evaluate,
                                                    estimate=finite and estimate)
    if not finite:   # the last good global model is kept, so the simulation stays usable
        sim.history.stop_reason = divergence(sim, r, train_loss)
    reported = 0 if skipped else len(training)
    down, up = sim.bytes_per_client()
    return RoundRecord(round=r, accuracy=acc, loss=loss, train_loss=train_loss, clients=clients,
                       bytes_down=down * len(clients), bytes_up=up * reported,
                       seconds=time.perf_counter() - t0, samples=samples if reported else 0,
                       update_norm=update_norm, attack_success=asr,
                       attackers=sum(k in sim.malicious for k in clients),
                       epsilon=alg.epsilon(r, sim.num_clients, sim.clients_per_round),
                       dropped=fates.dropped, stragglers=fates.stragglers, reported=reported,
                       client_accuracy=per_client, note=skipped or "", eval_size=size,
                       clusters=clusters, clip_norm=observed.get("clip_norm", math.nan),
                       clipped=observed.get("clipped", math.nan),
                       sim_seconds=math.nan if clock is None else clock.duration,
                       late=[] if clock is None else clock.late)


def play_whole_round(sim, r: int, *, evaluate: bool, estimate: bool = False,
                     play=None) -> RoundRecord:
    """:func:`play_round` (or ``play``, the asynchronous one), recorded whole or not applied: interrupted (Ctrl-C, an error),
    the global model, the server's state and the clients' state are as before it, so
    that going on gives the seeded run."""
    params = [p.detach().clone() for p in sim.global_model.parameters()]
    state = {k: v.clone() if isinstance(v, torch.Tensor) else v
             for k, v in sim.server_state.items()}
    sim.client_store.begin()
    try:
        rec = (play or play_round)(sim, r, evaluate=evaluate, estimate=estimate)
    except BaseException:
        with torch.no_grad():
            torch._foreach_copy_(list(sim.global_model.parameters()), params)
        sim.server_state.clear()
        sim.server_state.update(state)
        sim.client_store.rollback()
        raise
    sim.client_store.commit()
    return rec
