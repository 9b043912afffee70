"""What a dashboard shows of its runs: the status line and its two figures.

Plain functions of the histories (no widgets), so the same view can be drawn in a
dashboard, a static snapshot or a test.
"""

from __future__ import annotations

import textwrap

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .. import plots
from ..history import History
from ..privacy_plots import plot_clipping
from .controls import figure

__all__ = ["run_note", "status_text", "runs_figure", "client_figure", "LEGEND_WIDTH"]

LEGEND_WIDTH = 34  # characters per legend line: long run labels wrap, never leave the figure


def run_note(h: History, running: bool) -> str:
    """A legend suffix saying how a run ended."""
    if running:
        return " (running)"
    if h.diverged:
        return " (diverged)"
    if h.stop_reason and h.stop_reason.startswith("stopped"):
        return " (stopped)"
    return ""


def _state(h: History, final: bool) -> str:
    if not final:
        return "Training"
    if h.stop_reason and h.stop_reason.startswith("stopped"):
        return "Stopped"
    return "Diverged" if h.diverged else "Finished"


def status_text(h: History, n: int, elapsed: float, *, target: float | None,
                final: bool = False) -> str:
    """The status line: round, global accuracy, what else the run measures, time, bytes."""
    r = h.records[-1].round if len(h) else 0
    acc = h.final_accuracy
    mb = h.bytes_total[-1] / 1e6 if len(h) else 0.0
    parts = [f"{acc:.2%}" if np.isfinite(acc) else "n/a"]
    if len(h) and h.estimated[-1]:
        parts[0] += (f"</b> (whole test set) &middot; now &asymp; <b>{h.accuracy[-1]:.1%}</b> "
                     f"on {h.records[-1].eval_size:,} test images<b>")
    reached = h.rounds_to(target) if target else None
    if reached is not None:
        parts.append(f"target {target:.0%} reached at round <b>{reached}")
    asr = h.attack_success[np.isfinite(h.attack_success)] if len(h) else []
    if len(asr):
        parts.append(f"backdoor success <b>{asr[-1]:.0%}")
    eps = h.epsilon[-1] if len(h) else float("nan")
    if not np.isnan(eps):
        delta = h.config.get("dp_params", {}).get("delta", float("nan"))
        parts.append(f"privacy spent &epsilon; = <b>{eps:.3g}</b> (&delta; = {delta:g})<b>")
    if len(h) and (h.records[-1].dropped or h.records[-1].stragglers):
        last = h.records[-1]
        parts.append(f"this round {len(last.clients) - len(last.dropped)}/{len(last.clients)} "
                     f"reported, {len(last.stragglers)} straggled<b>")
    if len(h) and h.records[-1].client_accuracy:
        sp = h.client_spread()
        parts.append(f"clients: mean <b>{sp['mean'][-1]:.0%}</b>, worst "
                     f"<b>{sp['worst'][-1]:.0%}</b><b>")
    clock = h.simulated_time[-1] if len(h) else float("nan")
    if np.isfinite(clock):
        parts.append(f"simulated time <b>{clock / 3600:.2f} h</b><b>")
    acc_text = "</b> &middot; ".join(parts)
    return (f"{_state(h, final)}: <b>round {r}/{n}</b> &middot; global test accuracy "
            f"<b>{acc_text}</b> &middot; {elapsed:.1f} s &middot; {mb:.1f} MB communicated")


def runs_figure(runs: list[History], *, baselines: set, running: list, rounds: int,
                target: float | None, x: str = "round") -> Figure:
    """Accuracy and loss per round (or simulated hour, ``x="hours"``: the runs with devices)
    of every run, overlaid (baselines dashed), and the legend."""
    timed = [h for h in runs if len(h) and np.isfinite(h.simulated_time).any()]
    if x == "hours" and timed:
        runs = timed
    else:
        x = "round"
    fig = figure(12, 4)
    gs = fig.add_gridspec(1, 3, width_ratios=[1, 1, 0.8], wspace=0.25,
                          left=0.06, right=0.99, top=0.9, bottom=0.14)
    ax_acc, ax_loss, ax_leg = (fig.add_subplot(gs[0, i]) for i in range(3))
    plots.plot_convergence(runs, metric="accuracy", ax=ax_acc, target=target, x=x,
                           title="global model: test accuracy", legend=False)
    plots.plot_convergence(runs, metric="loss", ax=ax_loss, x=x,
                           title="global model: test loss", legend=False)
    dashed = {h.label for h in runs if id(h) in baselines}
    # the x axis spans the rounds asked for, from round 1, so the curve grows into it
    last = max([rounds] + [int(h.rounds[-1]) for h in runs if len(h)])
    for ax in (ax_acc, ax_loss):
        if x == "round":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlim(0.5, last + 0.5)
        for line in ax.get_lines():
            if line.get_label() in dashed:
                line.set_linestyle("--")
    colors = {line.get_label(): line.get_color() for line in ax_acc.get_lines()}
    for h in runs:  # a backdoor's attack success rate, dotted, in the run's colour
        asr = h.attack_success if len(h) else np.array([])
        ok = np.isfinite(asr)
        if ok.any() and x == "round":
            ax_acc.plot(h.rounds[ok], asr[ok], ls=":", marker="x", ms=4,
                        color=colors.get(h.label), label=f"{h.label}: backdoor success")
    ax_leg.axis("off")
    handles, labels = ax_acc.get_legend_handles_labels()
    if handles:
        notes = {h.label: run_note(h, h in running) for h in runs}
        labels = ["\n".join(textwrap.wrap(lab + notes.get(lab, ""), LEGEND_WIDTH))
                  for lab in labels]
        ax_leg.legend(handles, labels, loc="upper left", fontsize=9, frameon=False,
                      borderaxespad=0)
    else:
        ax_leg.text(0, 0.9, "No runs yet: press Run.", fontsize=10, transform=ax_leg.transAxes)
    return fig


def client_figure(h: History | None, *, rounds: int) -> Figure | None:
    """The second view (None when the run has nothing for it): the per-client accuracy spread
    and which clients took part in each round; under adaptive clipping, the clip norm."""
    if h is None or not len(h):
        return None
    per_client = bool(h.config.get("local_test_fraction") or h.config.get("dropout")
                      or h.config.get("stragglers"))
    dp = h.config.get("dp_params") or {}
    clipping = bool(dp.get("adaptive_clipping"))
    if not (per_client or clipping):
        return None
    fig = figure(12, 3.5)
    ratios = ([1, 1.3] if per_client else []) + ([1] if clipping else [])
    gs = fig.add_gridspec(1, len(ratios) + (0 if per_client else 1), wspace=0.3, left=0.06,
                          right=0.94, top=0.88, bottom=0.27,
                          width_ratios=ratios + ([] if per_client else [1]))
    name = h.label.split(" ", 1)[0]
    last = max(rounds, int(h.rounds[-1])) + 0.5
    if per_client:
        ax_spread, ax_strip = fig.add_subplot(gs[0, 0]), fig.add_subplot(gs[0, 1])
        plots.plot_client_spread(h, ax=ax_spread, title=f"{name}: each client's own test data")
        ax_spread.set_xlim(0.5, last)
        plots.plot_client_strip(h, ax=ax_strip, title=f"{name}: who took part (last 30 rounds)")
    if clipping:
        ax = fig.add_subplot(gs[0, len(ratios) - 1])
        plot_clipping(h, ax=ax, target_quantile=dp.get("target_quantile"),
                      title="adaptive clipping: the clip norm")
        ax.set_xlim(0.5, last)
    return fig
