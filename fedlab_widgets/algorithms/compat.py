"""Which steps of a round go together: each step declares what it needs, one function checks.

A round's steps are the algorithm's (SCAFFOLD's control variates, FedPer's personal head,
the aggregator, differential privacy, secure aggregation) and the simulation's
(compression). :data:`STEP_NEEDS` says, for each, what it needs of the others; the
aggregators declare theirs in their registry (``sum``, ``needs_each_update``).
:func:`check_compatible` is the one place a combination is refused, with a message that
says why.

Examples
--------
>>> from fedlab_widgets import algorithms
>>> check_compatible(algorithms.get("fedprox", secure_aggregation=True))
>>> algorithms.get("fedavg", aggregator="median", secure_aggregation=True)
Traceback (most recent call last):
ValueError: secure_aggregation works with the mean aggregator only: the median aggregator needs each client's update, which secure aggregation hides from the server: only their sum is revealed
"""

from __future__ import annotations

from .aggregators import AGGREGATORS

__all__ = ["STEP_NEEDS", "steps_of", "check_compatible"]

#: what each step needs: ``sum`` (the aggregate must be a sum: why, for an aggregator that
#: reads each update), ``unshared_state`` (no step may send client state it cannot protect:
#: how the state would be sent), ``no_state`` (a step that keeps its own per-client model)
STEP_NEEDS = {
    "personal_head": {"no_state": "personal_head does not combine with SCAFFOLD's control variates"},
    "differential_privacy": {"sum": "and the privacy accounting here is for a noisy sum",
                             "unshared_state": "unprotected"},
    "secure_aggregation": {"sum": "which secure aggregation hides from the server: only their "
                                  "sum is revealed",
                           "unshared_state": "unprotected"},
    "clusters": {"private": "the server averages each cluster's updates apart and must see which "
                            "cluster each update is for"},
    "loss_weights": {"private": "q-FFL's server weighs each update by its client's loss and "
                                "needs its norm (h_k)"},
    "compression": {"dense": "compression does not combine with secure aggregation: masked "
                             "updates are dense, random-looking integers",
                    "unshared_state": "uncompressed"},
}


def steps_of(algorithm, compression=None) -> list[str]:
    """The named steps a round of ``algorithm`` (with ``compression``) runs."""
    steps = [name for name, on in (("control_variates", algorithm.scaffold is not None),
                                   ("personal_head", algorithm.fedper is not None),
                                   ("differential_privacy", algorithm.dp is not None),
                                   ("secure_aggregation", algorithm.secagg is not None),
                                   ("compression", compression is not None)) if on]
    pieces = [algorithm.personal] + [getattr(s, "__self__", None) for s in algorithm.own_client_steps]
    steps += [p.step_name for p in pieces if getattr(p, "step_name", None)]
    return steps


def _not_a_sum(step: str, aggregator: str) -> str | None:
    """Why ``aggregator`` cannot serve ``step`` (None: it can)."""
    if AGGREGATORS.trait(aggregator, "sum"):
        return None
    why = AGGREGATORS.trait(aggregator, "why_not_sum")
    if why is None and AGGREGATORS.trait(aggregator, "needs_each_update"):
        why = f"the {aggregator} aggregator needs each client's update, {STEP_NEEDS[step]['sum']}"
    return why or "a custom aggregator is not a sum"


def check_compatible(algorithm, compression=None) -> None:
    """A ValueError naming the step and why, if the round's steps do not go together."""
    steps = steps_of(algorithm, compression)
    state = "control_variates" in steps
    if state and "personal_head" in steps:
        raise ValueError(STEP_NEEDS["personal_head"]["no_state"])
    for step in ("differential_privacy", "secure_aggregation"):
        for own in ("clusters", "loss_weights"):
            if step in steps and own in steps:
                raise ValueError(f"{step} does not combine with {algorithm.name} here: "
                                 f"{STEP_NEEDS[own]['private']}, and the privacy here is for "
                                 f"one sum of equally weighted updates")
        if step in steps:
            why = _not_a_sum(step, algorithm.aggregator_name)
            if why is not None:
                raise ValueError(f"{step} works with the mean aggregator only: {why}")
    for step in ("differential_privacy", "secure_aggregation", "compression"):
        if step not in steps:
            continue
        if step == "compression" and "secure_aggregation" in steps:
            raise ValueError(STEP_NEEDS["compression"]["dense"])
        if state:
            how = STEP_NEEDS[step]["unshared_state"]
            raise ValueError(f"{step} does not combine with SCAFFOLD here: its control "
                             f"variates would be sent {how}")
