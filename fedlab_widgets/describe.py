"""What a :class:`~fedlab_widgets.Simulation` is, in words and numbers: the config its History
stores (everything that changes a result) and its default run label."""

from __future__ import annotations

__all__ = ["run_config", "feature_skew", "default_label"]


def run_config(sim) -> dict:
    """The settings of this simulation, as stored in its history: the run settings
    (:meth:`RunConfig.to_dict`, with ``straggler_mode``, ``engine`` and ``num_threads``
    resolved), the data, the algorithm, attack and compression."""
    p = sim.partition
    return {
        "model": sim.model_name, "dataset": getattr(sim.train, "name", ""),
        "partition": p.label(), "scheme": p.scheme, "partition_params": dict(p.params),
        "partition_seed": p.seed, "partition_fingerprint": sim.full_partition.fingerprint(),
        "num_clients": sim.num_clients, "clients_per_round": sim.clients_per_round,
        **sim.settings.to_dict(),
        "straggler_mode": sim.straggler_mode, "engine": sim.engine.name,
        "num_threads": sim.num_threads, "eval_subset": sim.eval_subset,
        **sim.algorithm.config(),
        **({} if sim.attack is None else {**sim.attack.config(),
                                           "malicious_clients": sorted(sim.malicious)}),
        **({} if sim.compression is None else sim.compression.config()),
        **({} if not feature_skew(sim) else {"feature_skew": dict(feature_skew(sim))}),
        **({"devices_table": sim.devices.to_dict()} if sim.settings.devices == "table" else {}),
        "num_parameters": sim.num_parameters,
    }


def feature_skew(sim) -> dict:
    """The training data's feature skew (rotation, noise, seed) as
    :func:`~fedlab_widgets.features.skew_features` made it, or ``{}``."""
    skew = getattr(sim.train, "feature_skew", None) or {}
    if "partition" not in skew:      # not made per client (a whole set turned by rotated())
        return {}
    return {k: skew[k] for k in ("rotation", "noise", "seed")}


def default_label(sim) -> str:
    """The run's label: algorithm, model, partition, settings and what else changes a result."""
    extra = "" if sim.attack is None else f", {sim.attack.label()}"
    if sim.dropout:
        extra += f", dropout={sim.dropout:g}"
    if sim.stragglers:
        extra += f", stragglers={sim.stragglers:g} ({sim.straggler_mode})"
    if sim.compression is not None:
        extra += f", {sim.compression.label()}"
    if sim.devices is not None:
        extra += f", devices={sim.settings.devices}" + (
            f", deadline={sim.deadline:g}s" if sim.deadline is not None else "")
    if sim.selection != "uniform":
        extra += f", selection={sim.selection}" + (
            f" (d={sim.candidates})" if sim.candidates is not None else "")
    skew = feature_skew(sim)
    if skew.get("rotation", "none") != "none":
        extra += f", rotation={skew['rotation']}"
    if skew.get("noise"):
        extra += f", noise={skew['noise']:g}"
    return (f"{sim.algorithm.label()}, {sim.model_name}, {sim.full_partition.label()}, "
            f"{sim.settings.label()}{extra}")
