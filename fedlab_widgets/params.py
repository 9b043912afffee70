"""One table per parameter set: name, default, valid range, scale.

A :class:`Param` describes one setting (a partition scheme's ``alpha``, an
algorithm's ``mu``). The same table validates keyword arguments (a
``ValueError`` naming the parameter and its range), builds the widget's control
(log slider or linear) and the command line's flag, so that the three never
disagree.

Examples
--------
>>> mu = Param("mu", 0.01, lo=0.0, hi=10.0, log=True, ui=(1e-4, 10.0), doc="proximal weight")
>>> mu.check(0.1)
0.1
>>> mu.check(-1)
Traceback (most recent call last):
ValueError: mu must be a number from 0 to 10; got -1
>>> check_params("fedprox", (mu,), {"mu": 1})
{'mu': 1.0}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np

__all__ = ["Param", "check_params"]


@dataclass(frozen=True)
class Param:
    """A setting: its name, default, valid range and how a slider should show it.

    Parameters
    ----------
    name : str
    default : int or float
    kind : {"float", "int"}, default "float"
    lo, hi : float, optional
        The valid range (None: unbounded on that side).
    lo_open, hi_open : bool, default False
        Exclude the bound itself (``lo_open=True`` with ``lo=0`` means ``> 0``).
    log : bool, default False
        Shown on a logarithmic slider.
    ui : (float, float), optional
        The slider's range, inside the valid range (default: the valid range).
    doc : str
        One line for tooltips and ``--help``.
    """

    name: str
    default: float
    kind: str = "float"
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    log: bool = False
    ui: tuple[float, float] | None = None
    doc: str = ""

    def range_text(self) -> str:
        """The valid range in words, e.g. ``"a number > 0"`` or ``"an integer from 1 to 10"``."""
        what = "an integer" if self.kind == "int" else "a number"
        lo, hi = self.lo, self.hi
        if lo is not None and hi is not None and not self.lo_open and not self.hi_open:
            return f"{what} from {lo:g} to {hi:g}"
        if lo is not None and hi is not None:
            left, right = ("(" if self.lo_open else "["), (")" if self.hi_open else "]")
            return f"{what} in {left}{lo:g}, {hi:g}{right}"
        if lo is not None:
            return f"{what} {'>' if self.lo_open else '>='} {lo:g}"
        if hi is not None:
            return f"{what} {'<' if self.hi_open else '<='} {hi:g}"
        return what

    def check(self, value):
        """``value`` as an int or float, or a ValueError naming the parameter and its range.

        Booleans and strings are refused for every kind (``True`` is not 1, ``"0.1"``
        is not 0.1): the same rule for integer and float settings.
        """
        bad = ValueError(f"{self.name} must be {self.range_text()}; got {value!r}")
        if isinstance(value, (bool, np.bool_, str, bytes)) or value is None:
            raise bad
        if self.kind == "int":
            if isinstance(value, (float, np.floating)):
                if not float(value).is_integer():
                    raise bad
            elif not isinstance(value, (int, np.integer)):
                raise bad
            v = int(value)
        else:
            try:
                v = float(value)
            except (TypeError, ValueError):
                raise bad from None
            if not math.isfinite(v):
                raise bad
        if self.lo is not None and (v < self.lo or (self.lo_open and v == self.lo)):
            raise bad
        if self.hi is not None and (v > self.hi or (self.hi_open and v == self.hi)):
            raise bad
        return v

    @property
    def ui_range(self) -> tuple[float, float]:
        """The slider's (min, max)."""
        if self.ui is not None:
            return self.ui
        lo = self.lo if self.lo is not None else 0.0
        hi = self.hi if self.hi is not None else max(10.0, 10 * abs(self.default))
        return lo, hi


def check_params(owner: str, table: Iterable[Param], given: Mapping, *, defaults: bool = True) -> dict:
    """Validate ``given`` against ``table``; fill in defaults (in table order).

    Raises ValueError for a name the table does not have (listing the valid ones,
    and saying which ``owner`` it is for) or a value outside its range.
    """
    table = list(table)
    names = [p.name for p in table]
    unknown = sorted(set(given) - set(names))
    if unknown:
        valid = ", ".join(names) or "none"
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)} for {owner}; "
                         f"its parameters: {valid}")
    out = {}
    for p in table:
        if p.name in given:
            out[p.name] = p.check(given[p.name])
        elif defaults:
            out[p.name] = p.default
    return out
