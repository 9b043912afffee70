"""Clients the federation never saw: the participation gap (Yuan et al. 2022).

A federated model is trained on some people and used by others. Yuan, Morningstar, Ning &
Singhal ("What do we mean by generalization in federated learning?", ICLR 2022) separate
two gaps: the *out-of-sample* gap (new digits of people who took part) and the
*participation* gap (people who never took part). MNIST measures both: QMNIST's writers
split its training set among 539 people and its test set among 297 *other* people.

:func:`participation_gap` scores the global model per writer, on the held-out digits of
the writers who took part (``Simulation(..., local_test_fraction=...)``), on the
training-set writers whose clients were never sampled (the same population: Yuan et al.'s
participation gap) and on the test set's new writers, and summarises each distribution by
its mean, 10th percentile, worst writer and NIST series.

Examples
--------
>>> from fedlab_widgets import load_mnist, partition, Simulation
>>> from fedlab_widgets.generalisation import participation_gap
>>> train, test = load_mnist()
>>> sim = Simulation("2nn", train, test, partition(train, "writer"), local_test_fraction=0.2,
...                  client_fraction=0.05)
>>> _ = sim.run(2)                                        # doctest: +SKIP
>>> gap = participation_gap(sim)                          # doctest: +SKIP
>>> gap.gap, gap.new_gap                                  # doctest: +SKIP
>>> print(gap.table())                                    # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .writers import SERIES

__all__ = ["ParticipationGap", "WriterScores", "participation_gap", "per_writer_accuracy",
           "writer_scores"]


@torch.inference_mode()
def per_writer_accuracy(model: nn.Module, data, indices: torch.Tensor | None = None, *,
                        min_digits: int = 1, batch_size: int = 1024):
    """``(writers, accuracy, digits)``: the model's accuracy on each writer's digits.

    Parameters
    ----------
    model : torch.nn.Module
    data : FederatedDataset
        A dataset with writers (MNIST from :func:`~fedlab_widgets.load_mnist`).
    indices : torch.Tensor, optional
        Only these samples (default: all).
    min_digits : int, default 1
        Leave out writers with fewer digits among them (their accuracy is too coarse).
    """
    if isinstance(min_digits, bool) or not isinstance(min_digits, int) or min_digits < 1:
        raise ValueError(f"min_digits must be an integer >= 1; got {min_digits!r}")
    writers = data.writers                      # a clear error if the dataset has none
    ix = torch.arange(len(data.labels)) if indices is None else torch.as_tensor(indices)
    was = model.training
    model.eval()
    try:
        right = torch.cat([model(data.images[ix[i:i + batch_size]]).argmax(1)
                           == data.labels[ix[i:i + batch_size]]
                           for i in range(0, len(ix), batch_size)]) if len(ix) else \
            torch.zeros(0, dtype=torch.bool)
    finally:
        model.train(was)
    ids, inverse = torch.unique(writers[ix], return_inverse=True)
    digits = torch.bincount(inverse, minlength=len(ids))
    hits = torch.bincount(inverse, weights=right.double(), minlength=len(ids))
    keep = digits >= min_digits
    return ids[keep].numpy(), (hits[keep] / digits[keep]).numpy(), digits[keep].numpy()


@dataclass
class WriterScores:
    """One model's accuracy on each writer of a group (ids, accuracy, digits, series)."""

    writers: np.ndarray
    accuracy: np.ndarray
    digits: np.ndarray
    series: np.ndarray

    def __len__(self) -> int:
        return len(self.writers)

    def summary(self) -> dict:
        """Number of writers, mean (each writer counts once), 10th percentile, worst, and
        the mean over each NIST series' writers (``"Census employees"``, ...)."""
        acc = self.accuracy
        if len(acc) == 0:
            nan = float("nan")
            return {"writers": 0, "mean": nan, "p10": nan, "worst": nan, "by_series": {}}
        return {"writers": int(len(acc)), "mean": float(acc.mean()),
                "p10": float(np.percentile(acc, 10)), "worst": float(acc.min()),
                "by_series": {SERIES.get(int(v), f"series {v}"): float(acc[self.series == v].mean())
                              for v in np.unique(self.series)}}


_GROUPS = (("took_part", "took part (held-out digits)"),
           ("not_sampled", "never sampled (same people)"),
           ("new", "new people (the test set)"))


@dataclass
class ParticipationGap:
    """Per-writer accuracies of one model on three groups of writers.

    Attributes
    ----------
    took_part : WriterScores
        Training-set writers whose client took part in some round, scored on their
        held-out digits (the out-of-sample accuracy).
    not_sampled : WriterScores
        Training-set writers whose client was never sampled (so never trained on),
        scored on all their digits: the same population as ``took_part``, like Yuan et
        al.'s non-participating clients. Empty when every client took part.
    new : WriterScores
        The test set's writers: other people, and another mix (most are students).
    """

    took_part: WriterScores
    not_sampled: WriterScores
    new: WriterScores

    @property
    def gap(self) -> float:
        """The participation gap: mean accuracy of writers who took part minus that of
        writers from the same population who did not (NaN if everyone took part)."""
        if len(self.not_sampled) == 0:
            return float("nan")
        return float(self.took_part.accuracy.mean() - self.not_sampled.accuracy.mean())

    @property
    def new_gap(self) -> float:
        """Mean accuracy of writers who took part minus that of the test set's writers."""
        return float(self.took_part.accuracy.mean() - self.new.accuracy.mean())

    def summary(self) -> dict:
        """Each group's :meth:`WriterScores.summary`, and ``gap`` and ``new_gap``."""
        return {**{k: getattr(self, k).summary() for k, _ in _GROUPS},
                "gap": self.gap, "new_gap": self.new_gap}

    def table(self) -> str:
        """The summary as a small text table (accuracies per writer, in %)."""
        s = self.summary()
        names = list(SERIES.values())
        head = f"{'writers':<30}{'count':>6}{'mean':>7}{'10th pct':>9}{'worst':>7}"
        head += "".join(f"{n.split()[-1]:>11}" for n in names)
        rows = [head]
        for key, what in _GROUPS:
            r = s[key]
            if not r["writers"]:
                rows.append(f"{what:<30}{0:>6}   (none)")
                continue
            rows.append(f"{what:<30}{r['writers']:>6}{r['mean']:>7.1%}{r['p10']:>9.1%}"
                        f"{r['worst']:>7.1%}" + "".join(
                            f"{r['by_series'].get(n, float('nan')):>11.1%}" for n in names))
        rows.append(f"participation gap (took part - never sampled): {100 * s['gap']:+.1f} points; "
                    f"new people: {100 * s['new_gap']:+.1f} points")
        return "\n".join(rows)

    def plot(self, *, ax=None, title: str | None = None):
        """The groups' accuracy distributions as overlaid histograms, means (solid) and
        10th percentiles (dashed) marked; returns the figure."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6.4, 3.6))
        groups = [(getattr(self, k), w, c) for (k, w), c in zip(_GROUPS, ("C0", "C1", "C3"))
                  if len(getattr(self, k))]
        lo = min(float(g.accuracy.min()) for g, _, _ in groups)
        bins = np.linspace(max(0.0, np.floor(lo * 20) / 20), 1.0, 21)
        for g, what, colour in groups:
            acc = g.accuracy
            ax.hist(acc, bins=bins, alpha=0.4, density=True, color=colour,
                    label=f"{what}: mean {acc.mean():.1%}")
            ax.axvline(acc.mean(), color=colour, lw=2)
            ax.axvline(np.percentile(acc, 10), color=colour, lw=1, ls="--")
        ax.set_xlabel("accuracy on one writer's digits")
        ax.set_ylabel("density of writers")
        ax.set_title(title or f"participation gap {100 * self.gap:+.1f} points, new people "
                     f"{100 * self.new_gap:+.1f}")
        ax.legend(loc="upper left", fontsize=7)
        return ax.figure


def writer_scores(model: nn.Module, data, indices: torch.Tensor | None = None, *,
                  min_digits: int = 1) -> WriterScores:
    """:func:`per_writer_accuracy` with each writer's NIST series: its ``summary()`` gives
    the mean, 10th percentile, worst writer and the mean per series."""
    w, acc, n = per_writer_accuracy(model, data, indices, min_digits=min_digits)
    ids, first = np.unique(data.writers.numpy(), return_index=True)
    series = data.series.numpy()[first[np.searchsorted(ids, w)]] if len(w) else np.zeros(0, np.int64)
    return WriterScores(w, acc, n, series)


def participation_gap(sim, *, min_digits: int = 10) -> ParticipationGap:
    """The global model's accuracy per writer: writers who took part (on their held-out
    digits), writers of the same population who were never sampled, and new writers.

    Parameters
    ----------
    sim : Simulation
        Made on MNIST with ``local_test_fraction > 0`` (the held-out digits); after
        some rounds. Which clients took part is read from its history.
    min_digits : int, default 10
        Writers with fewer digits to score are left out (an accuracy over 3 digits
        says little).
    """
    if sim.local_test is None:
        raise ValueError("participation_gap needs held-out digits of the writers who took "
                         "part: make the Simulation with local_test_fraction > 0 "
                         "(for example 0.2)")
    if not len(sim.history):
        raise ValueError("participation_gap needs a trained model: run some rounds first")
    trained = set()
    for r in sim.history.records:
        trained |= set(r.clients) - set(r.dropped)
    full = sim.full_partition.client_indices
    writers = sim.train.writers
    seen = set(torch.cat([writers[full[k]] for k in trained]).tolist()) if trained else set()
    everyone = torch.cat([ix for ix in full if len(ix)])
    heldout = torch.cat([ix for ix in sim.local_test if len(ix)])
    in_seen = torch.isin(writers, torch.tensor(sorted(seen), dtype=writers.dtype))
    took = heldout[in_seen[heldout]]
    never = everyone[~in_seen[everyone]]
    model = sim.global_model
    return ParticipationGap(writer_scores(model, sim.train, took, min_digits=min_digits),
                            writer_scores(model, sim.train, never, min_digits=min_digits),
                            writer_scores(model, sim.test, min_digits=min_digits))
