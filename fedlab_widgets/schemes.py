"""The partition schemes: how each splits sample indices among clients (registered with
their parameter tables in :data:`PARTITION_SCHEMES`).

Each scheme is a function ``(labels, num_clients, rng, *, num_classes, **params)`` that
returns one index array per client; :func:`fedlab_widgets.partition.partition` checks its
parameters against its table and wraps the result in a :class:`~fedlab_widgets.partition.Partition`.
See :mod:`fedlab_widgets.partition` for what each scheme does.
"""

from __future__ import annotations


import numpy as np

from .params import Param
from .registry import Registry

__all__ = ["PARTITION_SCHEMES", "SCHEMES", "SCHEME_PARAMETERS"]

_MIN_SIZE = Param("min_size", 10, kind="int", lo=0, doc="smallest number of samples per client")
#: The partition schemes (a :class:`~fedlab_widgets.registry.Registry`): each scheme's
#: function ``(labels, num_clients, rng, num_classes=..., **params) -> index lists`` and its
#: parameters (name, default, range, scale), in order; the first one is the scheme's own
#: parameter (the one the explorer and dashboard show a slider for). Ranges that depend on
#: the data (``shards_per_client`` at most samples / clients, ...) are checked when
#: partitioning. The functions are registered below, where they are defined.
PARTITION_SCHEMES = Registry("scheme")
_MAX_DIRICHLET_DRAWS = 200
_MAX_DIRICHLET_SECONDS = 2.0  # a dashboard waits for this: give up early when it is hopeless



def _check_int(name, value, lo, hi, what=""):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer from {lo} to {hi}{what}; got {value!r}")
    return int(value)


def _iid(y, k, rng, **_):
    return np.array_split(rng.permutation(len(y)), k)


def _shards(y, k, rng, *, shards_per_client, **_):
    n = len(y)
    spc = _check_int("shards_per_client", shards_per_client, 1, max(1, n // k),
                     f" (num_clients * shards_per_client must not exceed the {n} samples)")
    order = np.argsort(y, kind="stable")
    shards = np.array_split(order, k * spc)
    deal = rng.permutation(k * spc)
    return [np.concatenate([shards[s] for s in deal[c * spc:(c + 1) * spc]]) for c in range(k)]


def _dirichlet(y, k, rng, *, alpha, min_size, num_classes, **_):
    n = len(y)
    min_size = _check_int("min_size", min_size, 0, n // k,
                          f" (num_clients * min_size must not exceed the {n} samples)")
    by_class = [np.flatnonzero(y == c) for c in range(num_classes)]
    import time
    t0 = time.perf_counter()
    best, draws = 0, 0
    for draws in range(1, _MAX_DIRICHLET_DRAWS + 1):
        parts = [[] for _ in range(k)]
        for ix in by_class:
            if len(ix) == 0:
                continue
            ix = rng.permutation(ix)
            p = rng.dirichlet(np.full(k, alpha))
            cuts = (np.cumsum(p)[:-1] * len(ix)).astype(np.int64)
            for c, piece in enumerate(np.split(ix, cuts)):
                parts[c].append(piece)
        parts = [np.concatenate(p) for p in parts]
        smallest = min(len(p) for p in parts)
        if smallest >= max(min_size, 1):
            return parts
        best = max(best, smallest)
        if time.perf_counter() - t0 > _MAX_DIRICHLET_SECONDS:
            break
    raise ValueError(
        f"min_size={min_size} cannot be met: in {draws} Dirichlet draws with alpha={alpha:g} "
        f"and num_clients={k}, some client always had fewer samples (at best {best}). "
        f"Raise alpha or use fewer clients (in the explorer and the dashboard: the alpha and "
        f"num_clients sliders); from Python, a smaller min_size also works (from 0 to {n // k})."
    )


def _deal_labels(k, rng, present, cpc, num_classes) -> list[list[int]]:
    """For each label, the clients holding it: ``cpc`` labels per client, fewest holders
    first with ties broken at random, so that labels are balanced and all covered."""
    holders = [[] for _ in range(num_classes)]
    count = np.zeros(num_classes, dtype=np.int64)
    for c in rng.permutation(k):
        key = count[present] + rng.random(len(present))
        chosen = present[np.argsort(key)[:cpc]]
        for lab in chosen:
            holders[lab].append(c)
        count[chosen] += 1
    return holders


def _round_shares(shares: np.ndarray, total: int) -> np.ndarray:
    """Integer sizes summing to ``total``: the floors of ``shares``, the remainder handed to
    the largest fractional parts."""
    sizes = np.floor(shares).astype(np.int64)
    rest = total - int(sizes.sum())
    sizes[np.argsort(-(shares - sizes), kind="stable")[:rest]] += 1
    return sizes


def _label_count(y, k, rng, *, classes_per_client, num_classes, **_):
    present = np.flatnonzero(np.bincount(y, minlength=num_classes))
    cpc = _check_int("classes_per_client", classes_per_client, 1, len(present),
                     " (the number of classes present)")
    holders = _deal_labels(k, rng, present, cpc, num_classes)
    parts = [[] for _ in range(k)]
    for lab in present:
        if not holders[lab]:
            continue
        ix = rng.permutation(np.flatnonzero(y == lab))
        if len(ix) < len(holders[lab]):
            raise ValueError(
                f"classes_per_client={cpc} with num_clients={k}: label {lab} has only "
                f"{len(ix)} samples but {len(holders[lab])} clients hold it; use fewer clients "
                f"or a smaller classes_per_client")
        for c, piece in zip(holders[lab], np.array_split(ix, len(holders[lab]))):
            parts[c].append(piece)
    return [np.concatenate(p) for p in parts]


def _quantity(y, k, rng, *, sigma, min_size, **_):
    n = len(y)
    min_size = _check_int("min_size", min_size, 1, n // k,
                          f" (num_clients * min_size must not exceed the {n} samples)")
    z = sigma * rng.standard_normal(k)
    w = np.exp(z - z.max())  # log-normal weights, normalised without overflow
    sizes = _round_shares((n - k * min_size) * w / w.sum(), n - k * min_size) + min_size
    return np.split(rng.permutation(n), np.cumsum(sizes)[:-1])


def _powerlaw(y, k, rng, *, exponent, classes_per_client, min_size, num_classes, **_):
    n = len(y)
    present = np.flatnonzero(np.bincount(y, minlength=num_classes))
    cpc = _check_int("classes_per_client", classes_per_client, 1, len(present),
                     " (the number of classes present)")
    min_size = _check_int("min_size", min_size, 1, n // k,
                          f" (num_clients * min_size must not exceed the {n} samples)")
    want = 1.0 + rng.pareto(exponent, k)                   # power-law (Pareto) sizes
    want = min_size + (n - k * min_size) * want / want.sum()
    holders = _deal_labels(k, rng, present, cpc, num_classes)   # balanced, as label_count
    parts = [[] for _ in range(k)]
    for lab in present:
        if not holders[lab]:
            continue
        ix = rng.permutation(np.flatnonzero(y == lab))
        h = np.array(holders[lab])
        if len(ix) < len(h) * max(1, min_size // cpc):
            raise ValueError(
                f"classes_per_client={cpc} with num_clients={k}: label {lab} has only "
                f"{len(ix)} samples for {len(h)} clients; use fewer clients or a smaller min_size")
        # each holder gets at least min_size // cpc, the rest in proportion to what it wants
        base = max(1, min_size // cpc)
        free = len(ix) - base * len(h)
        sizes = _round_shares(want[h] / want[h].sum() * free, free) + base
        for c, piece in zip(h, np.split(ix, np.cumsum(sizes)[:-1])):
            parts[c].append(piece)
    return [np.concatenate(p) if p else np.zeros(0, np.int64) for p in parts]


#: the writer scheme's populations: which NIST series (0 = Census employees, 4 = students)
POPULATIONS = {"all": (0, 4), "employees": (0,), "students": (4,)}


def writer_groups(writers, series, population: str = "all") -> np.ndarray:
    """The distinct writers of a population, in increasing id order."""
    keep = np.isin(series, POPULATIONS[population])
    return np.unique(writers[keep])


def _writer(y, k, rng, *, population, writers, series, **_):
    ids = writer_groups(writers, series, population)
    who = "" if population == "all" else f" among the {population}"
    if k is None:
        k = len(ids)
    k = _check_int("num_clients", k, 1, len(ids),
                   f" (the number of writers{who}: scheme 'writer' never splits a writer "
                   f"across clients)")
    client_of = np.full(int(writers.max()) + 1, -1, dtype=np.int64)
    for c, group in enumerate(np.array_split(rng.permutation(ids), k)):
        client_of[group] = c
    owner = client_of[writers]
    owner[~np.isin(series, POPULATIONS[population])] = -1
    order = np.argsort(owner, kind="stable")
    counts = np.bincount(owner[owner >= 0], minlength=k)
    start = int((owner < 0).sum())
    return np.split(order[start:], np.cumsum(counts)[:-1])


PARTITION_SCHEMES.add("iid", _iid, doc="uniformly random, equal sizes")
PARTITION_SCHEMES.add("shards", _shards, (
    Param("shards_per_client", 2, kind="int", lo=1, ui=(1, 10),
          doc="shards of label-sorted data per client (McMahan et al.: 2)"),),
    doc="McMahan et al.'s pathological non-IID: label-sorted shards dealt out")
PARTITION_SCHEMES.add("dirichlet", _dirichlet, (
    Param("alpha", 0.5, lo=0.0, lo_open=True, log=True, ui=(0.01, 100.0),
          doc="Dirichlet concentration: small = skewed labels, large = IID"), _MIN_SIZE),
    doc="label skew: each class split among clients by Dirichlet(alpha) proportions")
PARTITION_SCHEMES.add("label_count", _label_count, (
    Param("classes_per_client", 2, kind="int", lo=1, ui=(1, 10), doc="labels each client holds"),),
    doc="every client holds exactly classes_per_client labels")
PARTITION_SCHEMES.add("quantity", _quantity, (
    Param("sigma", 1.0, lo=0.0, hi=10.0, ui=(0.0, 3.0),
          doc="log-normal spread of client sizes (0 = equal sizes)"),
    Param("min_size", 10, kind="int", lo=1, doc="smallest number of samples per client")),
    doc="quantity skew: IID labels, log-normal client sizes")
PARTITION_SCHEMES.add("powerlaw", _powerlaw, (
    Param("exponent", 1.5, lo=0.1, hi=10.0, log=True, ui=(0.5, 5.0),
          doc="Pareto shape of client sizes: small = a few huge clients"),
    Param("classes_per_client", 2, kind="int", lo=1,
          doc="labels each client holds (FedProx's MNIST: 2)"),
    Param("min_size", 10, kind="int", lo=1, doc="smallest number of samples per client")),
    doc="label and quantity skew, as in the FedProx paper's MNIST set-up")
PARTITION_SCHEMES.add("writer", _writer, (
    Param("population", "all", kind="choice", choices=tuple(POPULATIONS),
          doc="whose digits: all writers, Census employees only, or high-school students only"),),
    doc="MNIST's real writers (QMNIST): one client per writer, or groups of whole writers",
    needs=("writers", "series"))
#: the scheme names, and each scheme's parameter table (views of the registry)
SCHEMES = PARTITION_SCHEMES.names()
SCHEME_PARAMETERS = PARTITION_SCHEMES.table()
