"""Who the global model leaves behind: per-client accuracy distributions, side by side.

A federation's mean accuracy hides its worst-served clients. Fairness in FL (Kairouz et
al. 2021, section 6; Li, Sanjabi, Beirami & Smith 2020) is read from the *distribution*
of per-client accuracies: its mean, its 10th percentile, its worst client and its
variance (q-FFL's tables report the variance of accuracies in percent squared).
:func:`compare` puts several methods' distributions in one table and one figure;
:func:`newcomer_accuracy` scores each new writer (people the federation never saw) with
the model a newcomer gets from the algorithm: the global model, or under IFCA the cluster
model with the lowest loss on the newcomer's digits.

Examples
--------
>>> import numpy as np
>>> f = compare({"fedavg": np.array([0.9, 0.8, 0.5]), "ditto": np.array([0.95, 0.9, 0.85])})
>>> print(f.table())
method  clients  mean    p10   worst  variance
fedavg  3        0.7333  0.56  0.5    288.9
ditto   3        0.9     0.86  0.85   16.67
>>> f.best("worst")
'ditto'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import torch

from .evaluation import client_losses, loaded
from .generalisation import per_writer_accuracy
from .tables import format_table

__all__ = ["Fairness", "compare", "fairness_summary", "newcomer_accuracy"]

COLUMNS = ("clients", "mean", "p10", "worst", "variance")


def fairness_summary(acc) -> dict:
    """Mean, 10th percentile, worst and variance (percent squared) of per-client accuracies
    (in 0..1; NaNs, i.e. clients without a test set, left out)."""
    a = np.asarray(acc, dtype=float)
    a = a[np.isfinite(a)]
    if not len(a):
        raise ValueError("no per-client accuracy to summarise (all NaN or empty)")
    return {"clients": int(len(a)), "mean": float(a.mean()), "p10": float(np.percentile(a, 10)),
            "worst": float(a.min()), "variance": float(np.var(a * 100.0))}


@dataclass
class Fairness:
    """Several methods' per-client accuracies (``accuracies``: name -> array) and, optionally,
    their accuracies on new writers (``newcomers``)."""

    accuracies: dict = field(default_factory=dict)
    newcomers: dict = field(default_factory=dict)

    def rows(self) -> list[dict]:
        out = []
        for name, acc in self.accuracies.items():
            row = {"method": name, **fairness_summary(acc)}
            if self.newcomers:
                new = self.newcomers.get(name)
                s = fairness_summary(new) if new is not None else {}
                row.update({"new mean": s.get("mean"), "new p10": s.get("p10")})
            out.append(row)
        return out

    def table(self) -> str:
        """One row per method: mean, 10th percentile, worst, variance (and new writers')."""
        return format_table(self.rows())

    def best(self, column: str = "worst") -> str:
        """The method with the highest ``column`` (the lowest for ``"variance"``)."""
        rows = self.rows()
        if not rows or column not in rows[0]:
            raise ValueError(f"column must be one of {', '.join(COLUMNS[1:])}; got {column!r}")
        pick = min if column == "variance" else max
        return pick(rows, key=lambda r: r[column])["method"]

    def plot(self, *, ax=None, title: str | None = "Who is left behind"):
        """Each method's per-client accuracies, sorted from the worst-served client up
        (the 10th percentile marked): the lower-left of each curve is who is left behind."""
        import matplotlib.pyplot as plt
        from matplotlib.ticker import PercentFormatter
        if ax is None:
            _, ax = plt.subplots(figsize=(6.4, 3.6))
        for name, acc in self.accuracies.items():
            a = np.sort(np.asarray(acc, dtype=float)[np.isfinite(acc)])
            share = (np.arange(len(a)) + 0.5) / len(a)
            (line,) = ax.plot(share, a, label=name)
            ax.plot([0.1], [np.percentile(a, 10)], "o", color=line.get_color())
        ax.set_xlabel("clients, from the worst-served (share of clients)")
        ax.set_ylabel("accuracy on its own test set")
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=None))
        ax.set_xlim(0, 1)
        ax.legend(loc="lower right", fontsize="small")
        if title:
            ax.set_title(title)
        return ax


def compare(accuracies: Mapping[str, np.ndarray], *, newcomers: Mapping | None = None) -> Fairness:
    """A :class:`Fairness` of per-client accuracies by method (e.g. ``sim.client_accuracy()``
    of each run, or :func:`~fedlab_widgets.personalisation.finetune`'s)."""
    if not accuracies:
        raise ValueError("compare needs at least one method's per-client accuracies")
    acc = {str(k): np.asarray(v, dtype=float) for k, v in accuracies.items()}
    for name, a in acc.items():
        fairness_summary(a)      # a clear error for an empty one
    return Fairness(acc, {str(k): np.asarray(v, dtype=float) for k, v in (newcomers or {}).items()})


@torch.no_grad()
def newcomer_accuracy(sim, data=None, *, min_digits: int = 10) -> np.ndarray:
    """Accuracy on each new writer's digits (``data``: default the test set, whose 297
    writers never took part) of the model a newcomer gets from ``sim``'s algorithm: the
    global model; under IFCA the cluster model with the lowest loss on its digits."""
    data = sim.test if data is None else data
    models = sim.algorithm.test_models(sim.context())
    if models is None:
        return per_writer_accuracy(sim.global_model, data, min_digits=min_digits)[1]
    ids, digits = torch.unique(data.writers, return_counts=True)   # as per_writer_accuracy keeps them
    ids = ids[digits >= min_digits]
    groups = [(data.writers == w).nonzero().squeeze(1) for w in ids.tolist()]
    loss = client_losses(sim.global_model, sim.layout, data, groups, models)
    acc = np.empty((len(models), len(groups)))
    for j, flat in enumerate(models):
        with loaded(sim.global_model, sim.layout, flat):
            acc[j] = per_writer_accuracy(sim.global_model, data, min_digits=min_digits)[1]
    return acc[loss.argmin(0).numpy(), np.arange(len(groups))]
