"""Reference solutions to the notebooks' exercises.

An exercise cell ships blank (``my_answer = None``); its check cell runs the
learner's answer when there is one and this module's solution otherwise
(``my_answer or solutions.x``), so that the notebook still runs top to bottom and
CI checks the real solution. The notebook shows the same solution in a collapsed
block. Read it only after trying.
"""

from __future__ import annotations

import torch

__all__ = ["server_momentum_step", "coordinate_median"]


# -- 06-client-drift-remedies ------------------------------------------------------------------
def server_momentum_step(delta: torch.Tensor, ctx) -> torch.Tensor:
    """Exercise 06.1: heavy-ball server momentum with beta = 0.9 (FedAvgM at server lr 1)."""
    v = ctx.state.get("velocity")
    v = delta.clone() if v is None else 0.9 * v + delta
    ctx.state["velocity"] = v
    return v


# -- 10-attacks-and-defenses -------------------------------------------------------------------
def coordinate_median(updates) -> torch.Tensor:
    """Exercise 10.1: the coordinate-wise median of the updates (mean of the middle two if even)."""
    s = updates.delta.sort(dim=0).values
    m = len(s)
    return s[m // 2] if m % 2 else (s[m // 2 - 1] + s[m // 2]) / 2
