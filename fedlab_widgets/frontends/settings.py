"""The dashboard's settings: its own table, its sections, and what its settings build.

Every control of the dashboard has a :class:`~fedlab_widgets.params.Param`: the run
table's (:data:`~fedlab_widgets.config.RUN_PARAMETERS`), the data table's, the
registries' (algorithms, aggregators, attacks) or :data:`DASHBOARD_PARAMETERS`;
:func:`setting_parameter` finds it. :data:`SECTIONS` groups the controls into the boxes
a lesson can ask for.
"""

from __future__ import annotations

import dataclasses

from .. import algorithms, attacks, compression as compression_
from ..models import TRAINABLE_MODELS
from ..params import Param
from .explorer import SCHEME_PARAMETER, data_parameter

__all__ = ["SECTIONS", "DEFAULT_SECTIONS", "DASHBOARD_PARAMETERS", "COMPRESSION_PRESETS",
           "CHOOSERS", "RUN_SHOWN", "DESCRIPTIONS", "setting_parameter", "make_algorithm",
           "make_attack", "make_compression", "LOCAL_TEST_FRACTION", "QUICK_EVAL_EVERY",
           "QUICK_EVAL_SUBSET", "simulations_for", "named_values", "run_config_for"]

#: the dashboard's compression choices: label -> (name, parameters) for compression.get
COMPRESSION_PRESETS = {
    "none": None, "top-10%": ("topk", {"fraction": 0.1}), "top-1%": ("topk", {"fraction": 0.01}),
    "rand-10%": ("randk", {"fraction": 0.1}), "8-bit": ("quantize", {"bits": 8}),
    "2-bit": ("quantize", {"bits": 2}),
}
LOCAL_TEST_FRACTION = 0.2  # the per-client view's local test share
QUICK_EVAL_EVERY, QUICK_EVAL_SUBSET = 5, 2000  # "quick evaluation": whole test set, subset
# the aggregators a dashboard offers (fednova's normalised mean is an algorithm of its own)
AGGREGATOR_CHOICES = tuple(a for a in algorithms.AGGREGATORS
                           if not algorithms.AGGREGATORS.trait(a, "why_not_sum"))


def _choice(name, default, choices, doc) -> Param:
    return Param(name, default, kind="choice", choices=tuple(choices), doc=doc)


def _flag(name, doc) -> Param:
    return Param(name, False, kind="bool", doc=doc)


#: the dashboard's own settings: what to train and what to compare it with
DASHBOARD_PARAMETERS: tuple[Param, ...] = (
    _choice("model", "2nn", TRAINABLE_MODELS, "the global model"),
    _choice("algorithm", "fedavg", algorithms.NAMES, "what the server does with the updates"),
    _choice("aggregator", "mean", AGGREGATOR_CHOICES,
            "the algorithm's weighted mean, or a robust aggregator"),
    Param("attack", "none", kind="choice", choices=("none", *attacks.NAMES), none="no attack",
          doc="make a fraction of the clients malicious"),
    _flag("secure_aggregation", "mask the updates: the server sees only their sum "
                                "(not with robust aggregators)"),
    _choice("compression", "none", COMPRESSION_PRESETS, "what each client sends instead of its update"),
    _flag("compare_iid", "also train the same settings on an IID partition (dashed curve)"),
    _flag("compare_fedavg", "also train the same settings with FedAvg (dashed curve)"),
    _flag("per_client", f"hold out {LOCAL_TEST_FRACTION:.0%} of each client's data and plot "
                        "every client's accuracy"),
    _flag("quick_eval", f"whole test set every {QUICK_EVAL_EVERY} rounds; in between "
                        f"{QUICK_EVAL_SUBSET:,} fixed test images (hollow points)"),
    _choice("x_axis", "round", ("round", "hours"),
            "draw the curves against rounds or simulated hours (runs with devices)"),
)
_DASH = {p.name: p for p in DASHBOARD_PARAMETERS}
DESCRIPTIONS = {"compare_iid": "compare with IID", "compare_fedavg": "compare with FedAvg",
                 "secure_aggregation": "secure aggregation", "per_client": "per-client view",
                 "quick_eval": "quick evaluation", "target_accuracy": "target accuracy",
                 "x_axis": "x axis"}


def _union(tables: dict, prefix: str = "") -> dict[str, Param]:
    """Every parameter of a family's tables by (prefixed) name; shared names share a control."""
    out: dict[str, Param] = {}
    for params in tables.values():
        for prm in params:
            out.setdefault(prefix + prm.name, dataclasses.replace(prm, name=prefix + prm.name))
    return out


# (chooser, its family's tables, the union of their parameters, prefix of their controls)
CHOOSERS = {
    "algorithm": (algorithms.PARAMETERS, _union(algorithms.PARAMETERS), ""),
    "aggregator": (algorithms.AGGREGATOR_PARAMETERS,
                   _union({a: algorithms.AGGREGATOR_PARAMETERS[a] for a in AGGREGATOR_CHOICES}), ""),
    "attack": (attacks.PARAMETERS, _union(attacks.PARAMETERS, prefix="attack_"), "attack_"),
}
RUN_SHOWN = ("client_fraction", "local_epochs", "batch_size", "lr", "rounds", "seed",
              "target_accuracy", "dropout", "stragglers", "straggler_mode", "devices", "deadline",
              "selection", "candidates")
#: section -> (heading, its controls, in order)
SECTIONS = {
    "data": ("Data &amp; clients", ["scheme", *[p.name for p in SCHEME_PARAMETER.values() if p],
                                    "num_clients", "client_fraction", "rotation", "noise"]),
    "training": ("Local training", ["model", "local_epochs", "batch_size", "lr"]),
    "run": ("Run", ["rounds", "seed", "target_accuracy", "compare_iid", "compare_fedavg",
                    "quick_eval", "per_client"]),
    "algorithm": ("Algorithm", ["algorithm", *CHOOSERS["algorithm"][1]]),
    "attack": ("Attack", ["attack", *CHOOSERS["attack"][1]]),
    "defence": ("Defence", ["aggregator", *CHOOSERS["aggregator"][1], "secure_aggregation"]),
    "devices": ("Real devices", ["dropout", "stragglers", "straggler_mode", "compression", "devices",
                                 "deadline", "selection", "candidates", "x_axis"]),
}
DEFAULT_SECTIONS = ("data", "training", "run")


def setting_parameter(name: str) -> Param:
    """The Param behind the dashboard's control ``name``."""
    if name in _DASH:
        return _DASH[name]
    for _, union, _ in CHOOSERS.values():
        if name in union:
            return union[name]
    return data_parameter(name)   # data, scheme and run settings


def _chosen(s: dict, chooser: str) -> dict:
    """The parameters of what ``chooser`` selects in settings ``s`` (unprefixed names)."""
    tables, _, prefix = CHOOSERS[chooser]
    if s[chooser] in (None, "none"):
        return {}
    return {p.name: s[prefix + p.name] for p in tables[s[chooser]]}


def make_algorithm(s: dict):
    """The :class:`~fedlab_widgets.algorithms.Algorithm` that settings ``s`` describe."""
    agg = {} if s["aggregator"] == "mean" else {"aggregator": s["aggregator"],
                                                **_chosen(s, "aggregator")}
    return algorithms.get(s["algorithm"], **agg, **_chosen(s, "algorithm"),
                          secure_aggregation=s["secure_aggregation"])


def make_attack(s: dict):
    """The :class:`~fedlab_widgets.attacks.Attack` that settings ``s`` describe, or None."""
    return None if s["attack"] in (None, "none") else attacks.get(s["attack"], **_chosen(s, "attack"))


def make_compression(s: dict):
    preset = COMPRESSION_PRESETS[s["compression"]]
    return None if preset is None else compression_.get(preset[0], **preset[1])


def simulations_for(s: dict, cfg, train, test, *, number: int):
    """The simulations a dashboard's settings ``s`` (and run config ``cfg``) ask for: the
    run, and its IID and FedAvg baselines when asked; labelled ``#number``. Returns them
    and the warnings to show (a baseline that would be the run itself is not trained)."""
    from ..simulation import Simulation
    from .explorer import cached_federation, cached_partition, scheme_params

    p = cached_partition(train, s["scheme"], s["num_clients"], seed=s["seed"],
                         **scheme_params(s["scheme"], s))
    skew = dict(rotation=s["rotation"], noise=s["noise"], seed=s["seed"])
    data, _ = cached_federation(train, p, **skew)
    alg, kw = make_algorithm(s), dict(config=cfg, attack=make_attack(s),
                                      compression=make_compression(s))
    sims = [Simulation(s["model"], data, test, p, algorithm=alg, **kw)]
    sims[0].history.label = f"#{number} {sims[0].default_label()}"
    warnings = []
    if s["compare_iid"] and s["scheme"] != "iid":
        iid = cached_partition(train, "iid", s["num_clients"], seed=s["seed"])
        sims.append(Simulation(s["model"], cached_federation(train, iid, **skew)[0], test, iid,
                               algorithm=alg, **kw))
        sims[-1].history.label = f"#{number} IID baseline: {sims[-1].default_label()}"
    elif s["compare_iid"]:
        warnings.append("compare with IID: the partition is already IID, so no baseline was "
                        "trained")
    if s["compare_fedavg"] and (s["algorithm"], s["aggregator"]) != ("fedavg", "mean"):
        sims.append(Simulation(s["model"], data, test, p, algorithm="fedavg", **kw))
        sims[-1].history.label = f"#{number} FedAvg baseline: {sims[-1].default_label()}"
    elif s["compare_fedavg"]:
        warnings.append("compare with FedAvg: the algorithm is already FedAvg, so no baseline "
                        "was trained")
    return sims, warnings


def named_values(values: dict) -> dict:
    """Settings as given to the dashboard, with the older names and None spelled as its controls
    hold them (``target`` is ``target_accuracy``, 0 meaning none; ``attack=None`` is ``"none"``)."""
    values = dict(values)
    if "target" in values:
        values["target_accuracy"] = values.pop("target") or None
    if "attack" in values and values["attack"] is None:
        values["attack"] = "none"
    return values


def run_config_for(s: dict, *, num_test: int):
    """The :class:`~fedlab_widgets.config.RunConfig` of a dashboard's settings ``s``."""
    from ..config import RunConfig

    return RunConfig(**{k: s[k] for k in RUN_SHOWN},
                     local_test_fraction=LOCAL_TEST_FRACTION if s["per_client"] else 0.0,
                     **({"eval_every": QUICK_EVAL_EVERY,
                         "eval_subset": min(QUICK_EVAL_SUBSET, num_test)} if s["quick_eval"] else {}))
