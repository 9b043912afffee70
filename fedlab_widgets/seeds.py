"""Seeds derived from integers: every random thing in the kit draws from ``(seed, purpose, ...)``.

The same ``(seed, round, client, epoch)`` gives the same generator in every process and
on every run, so that the same seed gives the same partition, clients, data order,
attackers and noise.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["derive_seed", "generator"]


def derive_seed(*parts: int) -> int:
    """A 63-bit seed derived from integers (stable across runs and processes)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> 1)


def generator(*parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*parts))
