"""Matplotlib plots of partitions and training runs.

Every function takes ``ax=`` (a new figure is made when it is None) and returns
the figure, so plots compose into subplots and work headless.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator, PercentFormatter

from .partition import Partition
from .history import History
from .privacy_plots import plot_privacy_utility  # noqa: F401  (re-exported: notebook 08 reads it here)

__all__ = ["plot_label_distribution", "plot_client_sizes", "plot_convergence", "plot_partition",
           "plot_privacy_utility", "plot_client_spread", "plot_client_strip"]

_METRICS = {
    "accuracy": "global test accuracy",
    "loss": "global test loss",
    "train_loss": "mean client training loss",
    "update_norm": "mean client update norm",
    "attack_success": "backdoor attack success rate",
    "epsilon": "privacy spent (epsilon)",
}


_X = {"round": "communication round", "megabytes": "megabytes communicated (down and up)",
      "megabytes_up": "megabytes uploaded by clients", "hours": "simulated hours (devices)"}


class _Percent(PercentFormatter):
    """Fractions as percent, with the decimals the axis range needs; nothing above 100%."""

    def __init__(self):
        super().__init__(xmax=1.0, decimals=None)

    def __call__(self, x, pos=None):
        return "" if x > 1 + 1e-9 else super().__call__(x, pos)


def _axes(ax, figsize=(6, 4)):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    return ax.figure, ax


def _client_slice(num_clients: int, max_clients: int | None) -> int:
    return num_clients if max_clients is None else min(num_clients, max_clients)


def plot_label_distribution(partition: Partition, *, ax=None, kind: str = "heatmap",
                            normalize: bool = False, max_clients: int | None = 50,
                            class_names=None, cmap: str = "viridis", colorbar=True):
    """Per-client label distribution as a heatmap or stacked bars.

    Parameters
    ----------
    partition : Partition
    ax : matplotlib Axes, optional
    kind : {"heatmap", "bars"}
    normalize : bool, default False
        Show each client's label shares (on a fixed 0 to 1 colour scale, so that
        partitions compare, and a client's size does not look like label skew)
        instead of counts.
    max_clients : int or None, default 50
        Show only the first clients (None: all).
    class_names : list of str, optional
        Legend / tick labels for the classes (default: the label numbers).
    colorbar : bool or list of Axes, default True
        Heatmap only: draw a colorbar beside ``ax`` (or beside the given axes).

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import torch
    >>> from fedlab_widgets import partition
    >>> p = partition(torch.arange(1000) % 10, "dirichlet", 20, alpha=0.3, seed=0)
    >>> fig = plot_label_distribution(p, kind="bars")
    """
    if kind not in ("heatmap", "bars"):
        raise ValueError(f"kind must be 'heatmap' or 'bars'; got {kind!r}")
    fig, ax = _axes(ax, (7, 3.5))
    counts = partition.label_counts().numpy().astype(float)
    m = _client_slice(partition.num_clients, max_clients)
    counts = counts[:m]
    if normalize:
        counts = counts / counts.sum(1, keepdims=True)
    names = [str(c) for c in range(partition.num_classes)] if class_names is None else list(class_names)
    what = "share of client's samples" if normalize else "samples"
    if kind == "heatmap":
        scale = dict(vmin=0.0, vmax=1.0) if normalize else {}
        im = ax.imshow(counts.T, aspect="auto", interpolation="nearest", cmap=cmap, origin="lower",
                       **scale)
        ax.set_yticks(range(partition.num_classes))
        ax.set_yticklabels(names)
        ax.set_ylabel("label")
        if colorbar is not False:
            fig.colorbar(im, ax=ax if colorbar is True else colorbar, label=what)
    else:
        colors = plt.get_cmap("tab10" if partition.num_classes <= 10 else "tab20")
        bottom = np.zeros(m)
        for c in range(partition.num_classes):
            ax.bar(np.arange(m), counts[:, c], bottom=bottom, width=0.9, color=colors(c % 20),
                   label=names[c])
            bottom += counts[:, c]
        ax.set_ylabel(what)
        ax.set_xlim(-0.5, m - 0.5)
        ax.legend(title="label", fontsize="small", ncol=2 if partition.num_classes > 5 else 1,
                  loc="center left", bbox_to_anchor=(1.0, 0.5))
    shown = f" (first {m} of {partition.num_clients})" if m < partition.num_clients else ""
    ax.set_xlabel(f"client{shown}")
    ax.set_title(f"Labels per client: {partition.label()}")
    return fig


def plot_client_sizes(partition: Partition, *, ax=None, sort: bool = False,
                      max_clients: int | None = None):
    """Number of samples held by each client, with the mean as a dashed line.

    Examples
    --------
    >>> import torch
    >>> from fedlab_widgets import partition
    >>> fig = plot_client_sizes(partition(torch.arange(1000) % 10, "quantity", 20, sigma=1.0))
    """
    fig, ax = _axes(ax, (7, 2.5))
    sizes = partition.sizes.numpy()
    m = _client_slice(partition.num_clients, max_clients)
    sizes = np.sort(sizes)[::-1][:m] if sort else sizes[:m]
    ax.bar(np.arange(m), sizes, width=0.9, color="tab:gray")
    ax.axhline(partition.sizes.double().mean().item(), color="k", ls="--", lw=1, label="mean")
    shown = f", first {m} of {partition.num_clients}" if m < partition.num_clients else ""
    ax.set_xlabel(f"client (largest first{shown})" if sort else
                  f"client{f' ({shown[2:]})' if shown else ''}")
    ax.set_ylabel("samples")
    ax.set_xlim(-0.5, m - 0.5)
    ax.legend(fontsize="small")
    ax.set_title(f"Client sizes: {partition.label()}")
    return fig


def plot_partition(partition: Partition, *, fig=None, max_clients: int | None = 50, class_names=None):
    """Label shares (fixed 0-1 scale) above client sizes, in one figure (used by the explorer).

    The heatmap shows each client's share of each label, so that Dirichlet(100) looks
    uniform and Dirichlet(0.1) patchy whatever the client sizes; sizes are the bars below.
    """
    if fig is None:
        fig = plt.figure(figsize=(8, 5))
    fig.set_layout_engine("constrained")
    ax1, ax2 = fig.subplots(2, 1, gridspec_kw={"height_ratios": [2, 1]}, sharex=True)
    # one colorbar beside both axes keeps the heatmap columns above their size bars
    plot_label_distribution(partition, ax=ax1, max_clients=max_clients, class_names=class_names,
                            colorbar=[ax1, ax2], normalize=True)
    plot_client_sizes(partition, ax=ax2, max_clients=max_clients)
    ax1.set_xlabel("")
    ax2.set_title("")
    return fig


def _as_items(histories) -> list[tuple[str, History]]:
    if isinstance(histories, History):
        return [(histories.label, histories)]
    if isinstance(histories, Mapping):
        return [(str(k), h) for k, h in histories.items()]
    return [(h.label, h) for h in histories]


def _xs(h: History, x: str) -> np.ndarray:
    if x == "round":
        return h.rounds
    if x == "hours":
        if not np.isfinite(h.simulated_time).any():
            raise ValueError(f"x='hours' needs runs with devices (simulated time); {h.label!r} has none")
        return h.simulated_time / 3600
    return (h.bytes_total if x == "megabytes" else np.cumsum(h.bytes_up)) / 1e6


def plot_convergence(histories: History | Iterable[History] | Mapping[str, History], *,
                     metric: str = "accuracy", ax=None, target: float | None = None,
                     x: str = "round", title: str | None = None, legend: bool = True):
    """Convergence curves of one or several runs, overlaid and labelled.

    Parameters
    ----------
    histories : History, list of History, or dict label -> History
        Runs to draw; a list uses each history's ``label``.
    metric : {"accuracy", "loss", "train_loss", "update_norm", "attack_success", "epsilon"}
    ax : matplotlib Axes, optional
    target : float, optional
        Draw a horizontal target line (e.g. 0.97) and mark where each run reaches it.
    x : {"round", "megabytes", "megabytes_up", "hours"}
        Against communication round, cumulative megabytes communicated (both ways),
        cumulative megabytes uploaded by clients (what compression saves), or simulated
        hours (``history.simulated_time``: runs with devices).

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> from fedlab_widgets import History
    >>> fig = plot_convergence([History(label="empty")], target=0.97)
    """
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {', '.join(_METRICS)}; got {metric!r}")
    if x not in _X:
        raise ValueError(f"x must be one of {', '.join(_X)}; got {x!r}")
    fig, ax = _axes(ax)
    estimates_labelled = False
    for label, h in _as_items(histories):
        if not len(h):
            continue
        xs = _xs(h, x)
        ys = getattr(h, metric)
        ok = np.isfinite(ys)
        (line,) = ax.plot(xs[ok], ys[ok], marker="." if ok.sum() < 30 else None, label=label)
        est = ok & h.estimated
        if est.any():  # cheap estimates on a test subset: hollow, so they are not read as truth
            ax.plot(xs[est], ys[est], "o", ms=4, mfc="white", color=line.get_color(),
                    label=None if estimates_labelled else "estimate (fixed test subset)")
            estimates_labelled = True
        if target is not None and metric == "accuracy":
            r = h.rounds_to(target)
            if r is not None:
                i = int(np.flatnonzero(h.rounds == r)[0])
                ax.plot([xs[i]], [ys[i]], "o", color=line.get_color(), ms=6, mfc="none")
    if target is not None:
        ax.axhline(target, color="k", ls=":", lw=1, label=f"target {target:g}")
    ax.set_xlabel(_X[x])
    if x == "round":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(_METRICS[metric])
    if metric in ("accuracy", "attack_success"):
        ax.yaxis.set_major_formatter(_Percent())
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    return fig


def plot_client_spread(history: History, *, ax=None, title: str | None = None, label: str = ""):
    """Per-client local test accuracy per round: the mean, a 10th-90th percentile band and
    the worst client (needs a simulation with ``local_test_fraction``).

    Examples
    --------
    >>> from fedlab_widgets import History, RoundRecord
    >>> h = History(records=[RoundRecord(1, 0.5, 1.0, 1.0, [0], 0, 0, 0.1,
    ...                                  client_accuracy=[0.2, 0.6, 0.9])])
    >>> fig = plot_client_spread(h)
    """
    fig, ax = _axes(ax)
    sp = history.client_spread() if len(history) else {}
    ok = np.isfinite(sp["mean"]) if sp else np.array([], bool)
    if ok.any():
        r = history.rounds[ok]
        name = f"{label}: " if label else ""
        (line,) = ax.plot(r, sp["mean"][ok], marker="." if ok.sum() < 30 else None,
                          label=f"{name}mean over clients")
        ax.fill_between(r, sp["p10"][ok], sp["p90"][ok], color=line.get_color(), alpha=0.2,
                        label=f"{name}10th-90th percentile")
        ax.plot(r, sp["worst"][ok], ls=":", color=line.get_color(), label=f"{name}worst client")
        ax.legend(fontsize="small", loc="lower right")
    else:
        ax.text(0.5, 0.5, "no per-client figures\n(tick \"per-client view\" / local_test_fraction)",
                ha="center", va="center", transform=ax.transAxes, fontsize=9, color="0.4")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("communication round")
    ax.set_ylabel("accuracy on each client's own test data")
    ax.yaxis.set_major_formatter(_Percent())
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    return fig


#: colours of the client strip: not sampled, trained fully, straggled, dropped out
STRIP_COLOURS = ("#f2f2f2", "#2ca02c", "#ff7f0e", "#d62728")


def plot_client_strip(history: History, *, num_clients: int | None = None, last: int = 30,
                      ax=None, title: str | None = None):
    """Which clients took part in each of the last ``last`` rounds: sampled and finished
    (green), straggled (orange), dropped out (red), not sampled (grey).

    Examples
    --------
    >>> from fedlab_widgets import History, RoundRecord
    >>> h = History(records=[RoundRecord(1, 0.5, 1.0, 1.0, [0, 2, 3], 0, 0, 0.1,
    ...                                  dropped=[2], stragglers=[3])])
    >>> fig = plot_client_strip(h, num_clients=5)
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch
    fig, ax = _axes(ax)
    recs = history.records[-last:]
    k = num_clients or history.config.get("num_clients") or \
        (1 + max((c for r in recs for c in r.clients), default=0))
    grid = np.zeros((max(len(recs), 1), k), dtype=int)
    for i, r in enumerate(recs):
        grid[i, r.clients] = 1
        grid[i, r.stragglers] = 2
        grid[i, r.dropped] = 3
    first = recs[0].round if recs else 1
    ax.imshow(grid, aspect="auto", interpolation="nearest", cmap=ListedColormap(STRIP_COLOURS),
              vmin=0, vmax=3, extent=(-0.5, k - 0.5, first - 0.5 + len(grid), first - 0.5))
    ax.set_xlabel("client")
    ax.set_ylabel("round")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(handles=[Patch(color=c, label=t) for c, t in zip(
        STRIP_COLOURS[1:], ("trained", "straggled", "dropped out"))],
        fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3, frameon=False)
    if title:
        ax.set_title(title)
    return fig
