"""What time looks like: the devices' speeds, when they are online, and who a policy picks.

Every function takes ``ax=`` (a new figure when omitted) and returns the figure.

Examples
--------
>>> from fedlab_widgets.clock import Devices
>>> d = Devices.preset("phones", 200, seed=0)
>>> fig = plot_device_speeds(d)
>>> fig = plot_availability(d)
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import PercentFormatter

from .clock import HOUR, Devices

__all__ = ["plot_device_speeds", "plot_availability", "plot_selected_speeds"]


def _new(ax, size=(5, 3.5)):
    if ax is None:
        fig, ax = plt.subplots(figsize=size, layout="constrained")
        return fig, ax
    return ax.figure, ax


def plot_device_speeds(devices: Devices, *, ax=None, samples: int = 600, title: str | None = None):
    """Histogram (log axis) of the seconds each device needs to train ``samples`` samples once."""
    fig, ax = _new(ax)
    secs = samples / devices.speed
    bins = np.logspace(np.log10(secs.min()), np.log10(secs.max()), 30)
    ax.hist(secs, bins=bins, color="tab:blue", alpha=0.8)
    ax.set_xscale("log")
    ax.axvline(np.median(secs), color="k", ls="--", lw=1, label=f"median {np.median(secs):.3g} s")
    ax.set_xlabel(f"seconds to train {samples} samples (log scale)")
    ax.set_ylabel("devices")
    ax.legend(fontsize="small")
    ax.set_title(title or f"{devices.name}: compute time per device")
    return fig


def plot_availability(devices: Devices, *, ax=None, title: str | None = None):
    """The share of devices online at each hour of the day (the clock starts at midnight)."""
    fig, ax = _new(ax)
    hours = np.arange(0, 24.01, 0.25)
    ax.plot(hours, [devices.available(h * HOUR).mean() for h in hours], color="tab:green")
    ax.set_xlim(0, 24)
    ax.set_xticks(range(0, 25, 4))
    ax.set_ylim(0, 1.02)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("hour of the day")
    ax.set_ylabel("devices available")
    ax.grid(True, alpha=0.3)
    ax.set_title(title or f"{devices.name}: availability")
    return fig


def plot_selected_speeds(devices: Devices, histories: dict, *, ax=None, title: str | None = None):
    """How often each device took part, against its speed, per run (``{label: History}``):
    a policy that favours fast devices leaves the slow ones out."""
    fig, ax = _new(ax)
    order = np.argsort(devices.speed)
    for label, h in histories.items():
        counts = np.zeros(len(devices))
        for r in h.records:
            for k in set(r.clients) - set(r.dropped):
                counts[k] += 1
        ax.plot(np.arange(len(order)) / len(order), counts[order] / max(len(h), 1), ".", ms=4,
                label=label)
    ax.set_xlabel("device, slowest to fastest (quantile of speed)")
    ax.set_ylabel("share of rounds it reported in")
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(title or "who takes part")
    return fig
