"""The one table of a run's settings, and :class:`RunConfig`, validated once.

Every core and systems setting of a run is declared here, once: its name, default,
valid range, scale and one line of doc. :class:`~fedlab_widgets.Simulation`, the
dashboard, the command line and the Flower export all build a :class:`RunConfig`
from it, and none re-checks a value by hand: the same bad value gets the same
message ("lr must be a number > 0; got 0") from every front end.

Defaults, chosen once:

* ``lr = 0.1``: half the best rate of McMahan et al. (2017)'s 2NN and CNN at
  ``batch_size=10`` on our grid (0.215, ``bench/README.md``), and never diverging
  there, IID or not; it reaches 97% (2NN, IID) in 1.4x the best rate's rounds. A
  larger default would make the first lesson's runs diverge on non-IID data.
* ``client_fraction = 0.1``, ``local_epochs = 1``, ``batch_size = 10``: the paper's
  C = 0.1, E = 1, B = 10 baseline.
* ``rounds = 20``: what a laptop trains in well under a minute with the 2NN.

Examples
--------
>>> cfg = RunConfig(lr=0.05, local_epochs=5)
>>> cfg.lr, cfg.client_fraction
(0.05, 0.1)
>>> RunConfig(lr=0)
Traceback (most recent call last):
ValueError: lr must be a number > 0; got 0
>>> RunConfig(batch_size=None).label()
'C=0.1, E=1, B=inf, lr=0.1'
>>> RunConfig.from_dict(RunConfig(seed=3).to_dict()) == RunConfig(seed=3)
True
"""

from __future__ import annotations

from typing import Iterator, Mapping

from .params import Param

__all__ = ["RUN_PARAMETERS", "RunConfig", "STRAGGLER_MODES", "ENGINE_NAMES", "run_parameter",
           "settings_doc"]

STRAGGLER_MODES = ("auto", "drop", "partial")
SELECTIONS = ("uniform", "available", "power_of_choice", "fast_first")
ENGINE_NAMES = ("auto", "sequential", "vectorized")
BATCH_PRESETS = (10, 20, 50, 100, 200, 600)

#: Every setting of a run, in the order front ends show them.
RUN_PARAMETERS: tuple[Param, ...] = (
    Param("client_fraction", 0.1, lo=0.0, lo_open=True, hi=1.0, ui=(0.01, 1.0),
          doc="C: the fraction of clients sampled each round"),
    Param("local_epochs", 1, kind="int", lo=1, ui=(1, 20),
          doc="E: passes each sampled client makes over its own data per round"),
    Param("batch_size", 10, kind="int", lo=1, none="full batch", choices=BATCH_PRESETS,
          doc="B: the local minibatch size (None: full batch; with E = 1 that is FedSGD)"),
    Param("lr", 0.1, lo=0.0, lo_open=True, log=True, ui=(1e-3, 10.0), widget="text",
          doc="the clients' SGD learning rate"),
    Param("rounds", 20, kind="int", lo=1, ui=(1, 200),
          doc="communication rounds to train"),
    Param("seed", 0, kind="int", lo=0, hi=2 ** 63 - 1, text="an integer from 0 to 2**63 - 1",
          doc="seeds the initial weights, the clients sampled and every client's data order"),
    Param("target_accuracy", None, lo=0.0, lo_open=True, hi=1.0, none="no target",
          doc="stop once the global model's test accuracy reaches this"),
    Param("dropout", 0.0, lo=0.0, hi=1.0, hi_open=True, ui=(0.0, 0.9),
          doc="chance that a sampled client never reports"),
    Param("stragglers", 0.0, lo=0.0, hi=1.0, ui=(0.0, 1.0),
          doc="chance that a reporting client can do only part of its local work"),
    Param("straggler_work", (0.1, 1.0), kind="pair", lo=0.0, lo_open=True, hi=1.0,
          doc="the share of its local steps a straggler completes, drawn from (low, high)"),
    Param("straggler_mode", "auto", kind="choice", choices=STRAGGLER_MODES,
          doc="drop: ignore stragglers (FedAvg); partial: use their partial work (FedProx, "
              "FedNova); auto: drop for FedAvg, partial otherwise"),
    Param("devices", "none", kind="choice", choices=("none", "uniform", "phones"), special=("table",),
          none="no clock",
          doc="device profiles and a simulated clock (none: rounds only; uniform: identical, always "
              "available; phones: a slow tail and nightly windows; a Devices table)"),
    Param("deadline", None, lo=0.0, lo_open=True, none="no deadline",
          doc="simulated seconds the server waits for a round's clients; later ones are dropped"),
    Param("selection", "uniform", kind="choice", choices=SELECTIONS,
          doc="which clients a round asks: uniform, the available ones, power_of_choice (highest "
              "local loss of d candidates), fast_first (fastest of d)"),
    Param("candidates", None, kind="int", lo=1, none="the default d",
          doc="d, the candidates power_of_choice (default 2 x clients per round) and fast_first "
              "(default all available) choose among"),
    Param("local_test_fraction", 0.0, lo=0.0, hi=1.0, hi_open=True, ui=(0.0, 0.5),
          doc="share of each client's data held out as its local test set (0: none)"),
    Param("eval_every", 1, kind="int", lo=1, ui=(1, 20),
          doc="evaluate on the whole test set every this many rounds (and the last)"),
    Param("eval_subset", None, kind="int", lo=1, none="no estimates",
          doc="between whole-test-set evaluations, estimate on this many fixed test images"),
    Param("engine", "auto", kind="choice", choices=ENGINE_NAMES,
          doc="how a round's clients train: all engines agree up to float rounding"),
    Param("num_threads", "auto", kind="int", lo=1, special=("auto",),
          none="torch's own setting",
          doc="torch threads while a round runs (auto: physical cores minus one, 1 to 4)"),
)
_BY_NAME = {p.name: p for p in RUN_PARAMETERS}


def run_parameter(name: str) -> Param:
    """The :class:`Param` of run setting ``name``."""
    return _BY_NAME[name]


_TYPES = {"float": "float", "int": "int", "bool": "bool", "choice": "str", "pair": "(float, float)"}


def settings_doc(table, indent: str = "    ") -> str:
    """Numpydoc ``Parameters`` lines for a table: name, type, default, doc, valid range."""
    lines = []
    for p in table:
        kind = _TYPES[p.kind] + (" or None" if p.none else "") + "".join(
            f" or {s!r}" for s in p.special)
        lines.append(f"{indent}{p.name} : {kind}, default {p.default!r}")
        lines.append(f"{indent}    {p.doc[0].upper()}{p.doc[1:]}; {p.range_text()}.")
    return "\n".join(lines)


class RunConfig(Mapping):
    """A run's settings, every one checked against :data:`RUN_PARAMETERS` when made.

    Read a setting as an attribute (``cfg.lr``) or a key (``cfg["lr"]``); a
    RunConfig is immutable: :meth:`replace` makes a changed copy (checked again).

    Parameters
    ----------
    **settings
        Any of :data:`RUN_PARAMETERS` by name; missing ones take their defaults.

    Raises
    ------
    ValueError
        A name that is not a run setting (listing them) or a bad value (naming it and
        its valid range).
    """

    __slots__ = ("_values",)

    def __init__(self, **settings):
        unknown = sorted(set(settings) - set(_BY_NAME))
        if unknown:
            raise ValueError(f"unknown run setting(s) {', '.join(unknown)}; the settings are "
                             f"{', '.join(_BY_NAME)}")
        values = {p.name: (p.check(settings[p.name]) if p.name in settings else p.default)
                  for p in RUN_PARAMETERS}
        object.__setattr__(self, "_values", values)

    @classmethod
    def from_dict(cls, d: Mapping, *, strict: bool = True) -> "RunConfig":
        """From :meth:`to_dict` (lists back to pairs); ``strict=False`` ignores other keys."""
        given = {k: v for k, v in d.items() if strict or k in _BY_NAME}
        if "straggler_work" in given and isinstance(given["straggler_work"], list):
            given["straggler_work"] = tuple(given["straggler_work"])
        return cls(**given)

    def to_dict(self) -> dict:
        """The settings as a JSON-able dict (pairs as lists), in table order."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self._values.items()}

    def replace(self, **changes) -> "RunConfig":
        return RunConfig(**{**self._values, **changes})

    def label(self) -> str:
        """``"C=0.1, E=1, B=10, lr=0.1"`` as in run labels (``", seed=2"`` added for a
        seed other than 0, so that runs of several seeds tell themselves apart)."""
        b = "inf" if self.batch_size is None else self.batch_size
        seed = f", seed={self.seed}" if self.seed else ""
        return f"C={self.client_fraction:g}, E={self.local_epochs}, B={b}, lr={self.lr:g}{seed}"

    # -- reading ---------------------------------------------------------------------------
    def __getattr__(self, name):
        try:
            return object.__getattribute__(self, "_values")[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        raise AttributeError("a RunConfig is immutable: use cfg.replace(name=value)")

    def __getitem__(self, name):
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other):
        return isinstance(other, RunConfig) and self._values == other._values

    def __hash__(self):
        return hash(tuple(self._values.items()))

    def __repr__(self) -> str:
        changed = ", ".join(f"{k}={v!r}" for k, v in self._values.items()
                            if v != _BY_NAME[k].default)
        return f"RunConfig({changed})"
