"""Simulated time: device profiles, availability, deadlines and the clock of each round.

Every curve in the kit is drawn against rounds; a real federation is judged in hours. With
``Simulation(..., devices=...)`` each client gets a device: a compute speed (training samples
per second), a downlink and an uplink (bytes per second) and a daily window in which it is
available (plugged in, on Wi-Fi, idle: FedScale's traces; Kairouz et al. 2021, section 7.2).
A round then takes simulated time::

    client k's time = bytes_down / down_k + samples_k / speed_k + bytes_up / up_k
    round's time    = the slowest reporting client's time  (or the deadline, if one missed it)

where ``samples_k`` is the client's real number of samples trained this round (its local steps
times their batches) and the bytes are what the algorithm really sends (after compression). A
``deadline`` (seconds) closes the round: a client that would miss it is dropped before it trains
(``late`` in its round's record). A client outside its window at the round's start never checks
in: dropped too. ``History.simulated_time`` is the cumulative clock; ``seconds`` stays the real
time a round took on this laptop.

Presets (seeded, :func:`Devices.preset`):

``"uniform"``
    every device the same and always available: 100 samples/s, 1 MB/s down and up.
``"phones"``
    log-normal speeds with a heavy slow tail (median 100 samples/s, sigma 1: one phone in ten
    below 28), median 2.5 MB/s down and 0.6 MB/s up (log-normal), and a nightly window: each
    phone is available from about 9 pm (normal, sd 3 h) for 6 to 14 hours; the clock starts at
    midnight.

Or a table: ``Devices.from_table({"speed": [...], "down": [...], "up": [...]})`` (optional
``window_start`` in hours, ``window_hours``), one row per client.

Examples
--------
>>> d = Devices.preset("phones", 100, seed=0)
>>> len(d), bool(d.available(0.0).mean() > 0.5), bool(d.available(14 * 3600.0).mean() < 0.5)
(100, True, True)
>>> Devices.preset("uniform", 3, seed=0).times([0, 1], samples=[600, 300], bytes_down=10**6, bytes_up=10**6)
array([8., 5.])
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from .seeds import generator

__all__ = ["Devices", "DEVICE_PRESETS", "HOUR", "RoundClock", "round_clock"]

DEVICE_PRESETS = ("uniform", "phones")
HOUR = 3600.0
_COLUMNS = ("speed", "down", "up", "window_start", "window_hours")


@dataclass(frozen=True, eq=False)
class Devices:
    """One device per client: ``speed`` (samples/s), ``down`` and ``up`` (bytes/s), and the daily
    window ``[window_start, window_start + window_hours)`` (hours of the day) it is available in."""

    speed: np.ndarray
    down: np.ndarray
    up: np.ndarray
    window_start: np.ndarray
    window_hours: np.ndarray
    name: str = "table"

    def __post_init__(self):
        cols = {c: np.asarray(getattr(self, c), dtype=np.float64).reshape(-1) for c in _COLUMNS}
        n = len(cols["speed"])
        for c, v in cols.items():
            if len(v) != n:
                raise ValueError(f"devices: column {c} has {len(v)} rows, speed has {n}")
            object.__setattr__(self, c, v)
        if n == 0:
            raise ValueError("devices: give at least one device")
        for c in ("speed", "down", "up"):
            bad = np.flatnonzero(~(np.isfinite(cols[c]) & (cols[c] > 0)))
            if len(bad):
                raise ValueError(f"devices: {c} must be a number > 0 (per second); got "
                                 f"{cols[c][bad[0]]:g} for client {bad[0]}")
        bad = np.flatnonzero(~((cols["window_hours"] > 0) & (cols["window_hours"] <= 24)))
        if len(bad):
            raise ValueError(f"devices: window_hours must be a number in (0, 24] (an empty availability "
                             f"window never lets the client in); got {cols['window_hours'][bad[0]]:g} "
                             f"for client {bad[0]}")
        if not np.isfinite(cols["window_start"]).all():
            raise ValueError("devices: window_start must be a finite hour of the day")
        object.__setattr__(self, "window_start", cols["window_start"] % 24)

    @classmethod
    def preset(cls, name: str, num_clients: int, *, seed: int = 0) -> "Devices":
        """``num_clients`` devices of preset ``name`` (:data:`DEVICE_PRESETS`), drawn from ``seed``."""
        if name not in DEVICE_PRESETS:
            raise ValueError(f"devices must be one of {', '.join(DEVICE_PRESETS)} or a Devices table; "
                             f"got {name!r}")
        n = int(num_clients)
        if name == "uniform":
            one = np.ones(n)
            return cls(100.0 * one, 1e6 * one, 1e6 * one, 0.0 * one, 24.0 * one, name="uniform")

        def normal(stream):
            return torch.randn(n, generator=generator(seed, 13, stream), dtype=torch.float64).numpy()

        hours = 6.0 + 8.0 * torch.rand(n, generator=generator(seed, 13, 5), dtype=torch.float64).numpy()
        return cls(speed=100.0 * np.exp(normal(1)), down=2.5e6 * np.exp(0.7 * normal(2)),
                   up=0.6e6 * np.exp(0.9 * normal(3)), window_start=21.0 + 3.0 * normal(4),
                   window_hours=hours, name="phones")

    @classmethod
    def from_table(cls, table) -> "Devices":
        """From columns (a dict of lists: ``speed``, ``down``, ``up``, optional ``window_start``,
        ``window_hours``) or rows (a list of dicts with those keys)."""
        if isinstance(table, Devices):
            return table
        if not isinstance(table, Mapping):
            rows = list(table)
            table = {c: [r[c] for r in rows] for c in _COLUMNS if rows and c in rows[0]}
        missing = [c for c in ("speed", "down", "up") if c not in table]
        if missing:
            raise ValueError(f"devices: the table needs columns speed, down, up; missing {', '.join(missing)}")
        n = len(table["speed"])
        return cls(table["speed"], table["down"], table["up"], table.get("window_start", [0.0] * n),
                   table.get("window_hours", [24.0] * n))

    def __len__(self) -> int:
        return len(self.speed)

    def to_dict(self) -> dict:
        """JSON-able columns (what :meth:`from_table` reads back)."""
        return {c: getattr(self, c).tolist() for c in _COLUMNS}

    def available(self, t: float) -> np.ndarray:
        """Which devices are in their window at simulated time ``t`` (seconds since midnight)."""
        hour = (t / HOUR) % 24
        return (hour - self.window_start) % 24 < self.window_hours

    def next_available(self, t: float) -> float:
        """The first time at or after ``t`` at which some device is available."""
        if self.available(t).any():
            return float(t)
        hour = (t / HOUR) % 24
        return float(t + ((self.window_start - hour) % 24).min() * HOUR)

    def times(self, clients, *, samples, bytes_down, bytes_up) -> np.ndarray:
        """Seconds each of ``clients`` takes: download + compute ``samples`` + upload."""
        k = np.asarray(clients, dtype=np.int64)
        return bytes_down / self.down[k] + np.asarray(samples, dtype=np.float64) / self.speed[k] \
            + bytes_up / self.up[k]

    def round_times(self, sizes, *, local_epochs: int, bytes_down, bytes_up) -> np.ndarray:
        """Every client's time for a whole round (all its data, ``local_epochs`` passes)."""
        return self.times(range(len(self)), samples=np.asarray(sizes) * local_epochs,
                          bytes_down=bytes_down, bytes_up=bytes_up)


def split_devices(settings: dict):
    """``(settings, table)``: a Devices table (or its columns) taken out of the keyword
    settings, which keep ``devices="table"`` (None becomes ``"none"``)."""
    v = settings.get("devices", "none")
    if v is None:
        return {**settings, "devices": "none"}, None
    if isinstance(v, str):
        return settings, None
    rows = isinstance(v, (list, tuple)) and v and all(isinstance(r, Mapping) for r in v)
    if not (isinstance(v, (Devices, Mapping)) or rows):
        from .config import run_parameter
        raise run_parameter("devices").error(v)
    return {**settings, "devices": "table"}, Devices.from_table(v)


def make_devices(setting: str, table, num_clients: int, *, seed: int):
    """The run's :class:`Devices` (None without a clock)."""
    if setting in (None, "none"):
        return None
    if setting != "table":
        return Devices.preset(setting, num_clients, seed=seed)
    if table is None:
        raise ValueError("devices='table' needs the table itself: pass devices=Devices.from_table(...)")
    if len(table) != num_clients:
        raise ValueError(f"devices: the table has {len(table)} devices for {num_clients} clients")
    return table


def check_deadline(deadline, devices, *, sizes, local_epochs, bytes_down, bytes_up) -> None:
    """A deadline no client can meet is refused, naming ``deadline`` and the fastest time."""
    if deadline is None:
        return
    if devices is None:
        raise ValueError("deadline needs devices: set devices to a preset (uniform, phones) or a table")
    fastest = float(devices.round_times(sizes, local_epochs=local_epochs, bytes_down=bytes_down,
                                        bytes_up=bytes_up).min())
    if fastest > deadline:
        raise ValueError(f"deadline must be at least {fastest:.3g} s: no client can finish a round in "
                         f"{deadline:g} s (the fastest takes {fastest:.3g} s)")


@dataclass
class RoundClock:
    """A round's simulated time: who was unavailable or late, each reporting client's time, and
    the round's duration (waiting for a device to come online included)."""

    unavailable: list[int]
    late: list[int]
    times: dict[int, float]
    duration: float


def round_clock(sim, r: int, clients: list[int], training: list[int], work: dict) -> RoundClock:
    """The clock of round ``r`` starting at ``sim.sim_time``: ``clients`` sampled, ``training``
    would train (after dropouts), ``work`` the stragglers' shares of their steps."""
    from .systems import truncate_schedule

    dev, t = sim.devices, sim.sim_time
    on = dev.available(t)
    unavailable = [k for k in clients if not on[k]]
    ready = [k for k in training if on[k]]
    if not ready:   # nobody checks in: the server tries again when a device comes online
        wait = dev.next_available(t) - t
        return RoundClock(unavailable, [], {}, wait if wait > 0 else (sim.deadline or 0.0))
    schedule = truncate_schedule(sim.make_schedule(r, ready), work)
    samples = {k: len(ix) for k, ix in zip(schedule.clients, schedule.indices)}
    down, up = sim.bytes_per_client()
    secs = dev.times(ready, samples=[samples[k] for k in ready], bytes_down=down, bytes_up=up)
    times = dict(zip(ready, secs.tolist()))
    late = [k for k in ready if sim.deadline is not None and times[k] > sim.deadline]
    reporting = [times[k] for k in ready if k not in late]
    duration = sim.deadline if late else max(reporting)
    return RoundClock(unavailable, late, {k: v for k, v in times.items() if k not in late},
                      float(duration if math.isfinite(duration) else 0.0))
