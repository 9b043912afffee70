"""IFCA's clusters as a learner watches them: who joined which cluster, round by round.

:func:`cluster_joins` reads a history of ``algorithms.get("ifca", ...)`` into a
``[rounds, clients]`` table (-1 where a client did not train that round);
:func:`plot_cluster_joins` draws it with the clients sorted by their true group (their
rotation, say), so that recovered clusters show as blocks of one colour; :func:`purities`
gives each round's cluster purity (:func:`~fedlab_widgets.algorithms.ifca.purity`).

Examples
--------
>>> from fedlab_widgets.history import History, RoundRecord
>>> h = History(records=[RoundRecord(1, 0.5, 1.0, 1.0, [0, 2], 0, 0, 0.1, clusters=[1, 0])])
>>> cluster_joins(h, num_clients=3).tolist()
[[1, -1, 0]]
>>> purities(h, truth=[90, 0, 0])
[1.0]
"""

from __future__ import annotations

import numpy as np

from .algorithms.ifca import purity

__all__ = ["cluster_joins", "plot_cluster_joins", "purities"]


def _trained(rec) -> list[int]:
    return sorted(set(rec.clients) - set(rec.dropped))


def cluster_joins(history, *, num_clients: int | None = None) -> np.ndarray:
    """``[rounds, clients]``: the cluster each client joined in each round (-1: it did not train)."""
    recs = [r for r in history.records if r.clusters]
    if not recs:
        raise ValueError("the history has no clusters: run algorithms.get('ifca', num_clusters=...)")
    k = num_clients or history.config.get("num_clients") or 1 + max(max(r.clients) for r in recs)
    out = np.full((len(recs), int(k)), -1, dtype=np.int64)
    for i, r in enumerate(recs):
        out[i, _trained(r)] = r.clusters
    return out


def purities(history, *, truth) -> list[float]:
    """Each round's cluster purity against each client's true group ``truth[k]``."""
    return [purity(r.clusters, [truth[k] for k in _trained(r)]) for r in history.records if r.clusters]


def plot_cluster_joins(history, *, truth=None, ax=None, title: str | None = None):
    """Rounds down, clients across (sorted by ``truth`` when given), coloured by the cluster
    each joined; blank where it did not train. Returns the axes."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    joins = cluster_joins(history, num_clients=None if truth is None else len(truth))
    order = np.arange(joins.shape[1]) if truth is None else np.argsort(np.asarray(truth), kind="stable")
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 2.6))
    J = int(history.config.get("algorithm_params", {}).get("num_clusters", joins.max() + 1))
    img = np.ma.masked_less(joins[:, order], 0)
    ax.imshow(img, aspect="auto", interpolation="nearest", cmap=ListedColormap(
        [plt.get_cmap("tab10")(j) for j in range(J)]), vmin=-0.5, vmax=J - 0.5)
    ax.set_ylabel("round")
    ax.set_yticks(range(len(joins)), [str(i + 1) for i in range(len(joins))])
    ax.set_xlabel("client" + (", sorted by true group" if truth is not None else ""))
    if truth is not None:
        groups, first = np.unique(np.asarray(truth)[order], return_index=True)
        ax.set_xticks(first, [str(g) for g in groups])
    handles = [plt.Rectangle((0, 0), 1, 1, color=plt.get_cmap("tab10")(j)) for j in range(J)]
    ax.legend(handles, [f"cluster {j}" for j in range(J)], loc="upper left",
              bbox_to_anchor=(1.0, 1.0), fontsize="small")
    ax.set_title(title or "which cluster each client joined")
    return ax
