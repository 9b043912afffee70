"""Engines: *how* a round's clients train. Each returns per-client updates ``[M, D]``.

=================  ===============================================================
``"sequential"``   the reference: one client after another, plain autograd
``"vectorized"``   all clients at once on one flat ``[M, D]`` buffer (the default)
=================  ===============================================================

Both take the same :class:`Schedule` and :class:`LocalRule` and agree up to float
rounding (tested in float64). Nothing here imports the simulation: an engine is
built from a model and the training set, and knows nothing of algorithms.
"""

from ..registry import Registry
from .base import ClientUpdates, FlatLayout, LocalRule, Schedule
from .sequential import SequentialEngine, sgd_steps
from .vectorized import VectorizedEngine

__all__ = ["ENGINES", "get_engine", "ClientUpdates", "FlatLayout", "LocalRule", "Schedule",
           "SequentialEngine", "VectorizedEngine", "sgd_steps"]

#: the engines by name (``ENGINES["vectorized"]`` is the class)
ENGINES = Registry("engine")
ENGINES.add("sequential", SequentialEngine, doc="the reference: one client after another, autograd")
ENGINES.add("vectorized", VectorizedEngine, doc="all clients at once on one flat [M, D] buffer")
AUTO_ENGINE = "vectorized"


def get_engine(name: str, model, train):
    """An engine by name (``"auto"`` is ``"vectorized"``) for ``model`` and ``train``."""
    if name != "auto" and name not in ENGINES:
        raise ValueError(f"engine must be one of auto, {', '.join(ENGINES)}; got {name!r}")
    return ENGINES[AUTO_ENGINE if name == "auto" else name](model, train)
