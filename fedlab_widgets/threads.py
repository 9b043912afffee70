"""How many torch threads a round uses, and a context that sets them for a block.

Examples
--------
>>> import torch
>>> before = torch.get_num_threads()
>>> with torch_threads(1):
...     torch.get_num_threads()
1
>>> torch.get_num_threads() == before
True
>>> 1 <= default_num_threads() <= 4
True
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch

__all__ = ["default_num_threads", "physical_cores", "resolve_num_threads", "torch_threads",
           "MAX_DEFAULT_THREADS"]

MAX_DEFAULT_THREADS = 4


def default_num_threads() -> int:
    """Torch threads for a round: physical cores available to this process minus one,
    at least 1, at most 4 (``FEDLAB_NUM_THREADS`` overrides).

    One core is left for what shares the laptop (the notebook's kernel and UI, the
    browser): OpenMP threads spin while waiting for each other, so a thread that
    loses its core to another process stalls all of them. These small models gain
    little beyond 4 threads. On this project's 2-core test machine it is 1.
    """
    env = os.environ.get("FEDLAB_NUM_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise ValueError(f"FEDLAB_NUM_THREADS must be a positive integer; got {env!r}") from None
    return max(1, min(MAX_DEFAULT_THREADS, physical_cores() - 1))


def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on (Linux topology; else all CPUs)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
    cores = set()
    for c in cpus:
        try:
            topo = Path(f"/sys/devices/system/cpu/cpu{c}/topology")
            cores.add((topo / "physical_package_id").read_text().strip()
                      + ":" + (topo / "core_id").read_text().strip())
        except OSError:
            return len(cpus)
    return max(1, len(cores))


def resolve_num_threads(num_threads) -> int | None:
    """``num_threads`` checked (the run table's ``num_threads``): an integer >= 1, None,
    or "auto" (:func:`default_num_threads`)."""
    from .config import run_parameter

    num_threads = run_parameter("num_threads").check(num_threads)
    return default_num_threads() if num_threads == "auto" else num_threads


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the block with ``n`` torch intra-op threads, then restore the setting."""
    before = torch.get_num_threads()
    if n is not None and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
