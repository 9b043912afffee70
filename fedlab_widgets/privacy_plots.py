"""What privacy looks like: a membership attack's ROC, the audit's epsilon beside the
accountant's, and DP's clip norm round by round (adaptive clipping's trajectory).

Every function takes ``ax=`` (a new figure when omitted) and returns the figure.
"""

from __future__ import annotations

from typing import Mapping

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator, PercentFormatter

from .history import History

__all__ = ["plot_roc", "plot_epsilon_bounds", "plot_clipping", "plot_privacy_utility"]


def _new(ax, size=(5, 4)):
    if ax is None:
        fig, ax = plt.subplots(figsize=size, layout="constrained")
        return fig, ax
    return ax.figure, ax


def plot_roc(results: Mapping, *, ax=None, log: bool = True, title: str | None = None):
    """ROC curves of membership inference attacks, one per ``{label: MembershipResult}``.

    Log axes (the default) show the low-FPR regime, where an attack is dangerous; the dashed
    diagonal is guessing.

    Examples
    --------
    >>> import torch
    >>> from fedlab_widgets import get_model, load_mnist
    >>> from fedlab_widgets.audit import membership_inference
    >>> train, _ = load_mnist()
    >>> r = membership_inference(get_model("logreg", seed=0), torch.arange(200),
    ...                          torch.arange(200, 400), dataset=train)
    >>> fig = plot_roc({"untrained": r})
    """
    fig, ax = _new(ax)
    lo = 1e-3
    for label, r in results.items():
        ax.plot(np.clip(r.fpr, lo, 1), np.clip(r.tpr, lo, 1), label=f"{label}: AUC {r.auc:.2f}")
    ax.plot([lo, 1], [lo, 1], ls="--", color="0.5", lw=1, label="guessing")
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlim(lo, 1)
    ax.set_ylim(lo, 1.05)
    ax.set_xlabel("false positive rate (non-members called members)")
    ax.set_ylabel("true positive rate (members found)")
    ax.set_title(title or "membership inference: ROC")
    ax.legend(fontsize="small", loc="lower right")
    ax.grid(True, alpha=0.3, which="both")
    return fig


def plot_epsilon_bounds(rows, *, ax=None, title: str | None = None):
    """The audit's lower bound beside the accountant's upper bound on epsilon, per noise level.

    ``rows``: dicts with ``noise_multiplier``, ``epsilon`` (the accountant's) and
    ``epsilon_lower`` (the audit's). The truth lies between the two bars.
    """
    fig, ax = _new(ax)
    x = np.arange(len(rows))
    upper = np.array([min(r["epsilon"], 1e3) for r in rows], float)
    lower = np.array([r["epsilon_lower"] for r in rows], float)
    ax.bar(x - 0.2, upper, 0.4, label="accountant: upper bound", color="tab:blue")
    ax.bar(x + 0.2, lower, 0.4, label="audit: lower bound (95%)", color="tab:orange")
    for i, (u, lo) in enumerate(zip(upper, lower)):
        ax.annotate(f"{u:.3g}", (i - 0.2, u), ha="center", va="bottom", fontsize=8)
        ax.annotate(f"{lo:.2g}", (i + 0.2, max(lo, 1e-2)), ha="center", va="bottom", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylim(1e-2, max(upper.max() * 3, 1))
    ax.set_xticks(x, [f"z = {r['noise_multiplier']:g}" for r in rows])
    ax.set_ylabel("epsilon")
    ax.set_title(title or "what the audit proves vs what the accountant promises")
    ax.legend(fontsize="small", loc="upper right")
    return fig


def plot_clipping(history: History, *, ax=None, target_quantile: float | None = None,
                  title: str | None = None):
    """A DP run's clip norm per round (left axis) and the share of updates it clipped (right).

    Under adaptive clipping the clip norm moves until ``1 - target_quantile`` of the updates
    are clipped (the dotted line).

    Examples
    --------
    >>> from fedlab_widgets import History, RoundRecord
    >>> h = History(records=[RoundRecord(r, 0.5, 1.0, 1.0, [0], 0, 0, 0.1, clip_norm=1 / r,
    ...                                  clipped=0.5) for r in (1, 2, 3)])
    >>> fig = plot_clipping(h, target_quantile=0.5)
    """
    fig, ax = _new(ax)
    ok = np.isfinite(history.clip_norm) if len(history) else np.array([], bool)
    if not ok.any():
        ax.text(0.5, 0.5, "no clip norm: not a DP run", ha="center", va="center",
                transform=ax.transAxes, fontsize=9, color="0.4")
        return fig
    r = history.rounds[ok]
    ax.plot(r, history.clip_norm[ok], color="tab:purple", marker="." if ok.sum() < 30 else None,
            label="clip norm")
    ax.set_ylabel("clip norm", color="tab:purple")
    ax.set_xlabel("communication round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    right = ax.twinx()
    right.plot(r, history.clipped[ok], color="tab:gray", ls="-", alpha=0.7, label="share clipped")
    if target_quantile is not None:
        right.axhline(1 - target_quantile, ls=":", color="tab:gray",
                      label=f"1 - target quantile = {1 - target_quantile:.0%}")
    right.set_ylim(-0.02, 1.02)
    right.yaxis.set_major_formatter(PercentFormatter(1.0))
    right.set_ylabel("updates clipped", color="tab:gray")
    lines = ax.get_lines() + right.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], fontsize="small", loc="upper right")
    ax.set_title(title or "the clip norm, round by round")
    return fig


def plot_privacy_utility(rows, *, ax=None, title: str | None = None):
    """Final accuracy against epsilon, one line per number of clients.

    ``rows`` as returned by :func:`fedlab_widgets.experiments.privacy_utility`; the
    non-private reference of each number of clients is a dashed horizontal line, and
    each point is labelled with its noise multiplier z.

    Examples
    --------
    >>> rows = [dict(num_clients=100, clients_per_round=10, noise_multiplier=None,
    ...              epsilon=float("inf"), final_accuracy=0.9),
    ...         dict(num_clients=100, clients_per_round=10, noise_multiplier=1.0,
    ...              epsilon=5.0, final_accuracy=0.8)]
    >>> fig = plot_privacy_utility(rows)
    """
    fig, ax = _new(ax, (6, 4))
    for k in dict.fromkeys(r["num_clients"] for r in rows):
        mine = [r for r in rows if r["num_clients"] == k]
        dp = sorted((r for r in mine if r["noise_multiplier"] is not None),
                    key=lambda r: r["epsilon"])
        label = f"K={k} clients, m={mine[0]['clients_per_round']} per round"
        (line,) = ax.plot([r["epsilon"] for r in dp], [r["final_accuracy"] for r in dp],
                          "o-", label=label)
        for r in dp:
            ax.annotate(f"z={r['noise_multiplier']:g}", (r["epsilon"], r["final_accuracy"]),
                        textcoords="offset points", xytext=(4, -10), fontsize="x-small",
                        color=line.get_color())
        for r in mine:
            if r["noise_multiplier"] is None:
                ax.axhline(r["final_accuracy"], color=line.get_color(), ls="--", lw=1,
                           label=f"K={k}, no privacy")
    ax.set_xscale("log")
    ax.set_xlabel("epsilon spent (log scale; smaller is more private)")
    ax.set_ylabel("final test accuracy")
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=None))
    ax.grid(True, alpha=0.3, which="both")
    if title:
        ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    return fig
