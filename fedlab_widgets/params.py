"""One table per parameter set: name, default, valid range, scale, doc.

A :class:`Param` describes one setting (a run's ``lr``, a partition scheme's
``alpha``, an algorithm's ``mu``). The same declaration validates keyword
arguments (a ``ValueError`` naming the parameter and its valid range, in one
format for every front end), builds the widget's control (log slider, integer
slider, dropdown, checkbox) and the command line's flag, so that the three never
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
>>> Param("batch_size", 10, kind="int", lo=1, none="full batch").check(None) is None
True
>>> Param("mode", "auto", kind="choice", choices=("auto", "drop")).check("fast")
Traceback (most recent call last):
ValueError: mode must be one of auto, drop; got 'fast'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np

__all__ = ["Param", "check_params", "KINDS"]

#: what a Param can hold: a float, an integer, True/False, one of a few choices, or a
#: pair (low, high) of floats inside the range
KINDS = ("float", "int", "bool", "choice", "pair")


@dataclass(frozen=True)
class Param:
    """A setting: its name, default, valid range and how a control should show it.

    Parameters
    ----------
    name : str
    default : int, float, bool, str, tuple or None
    kind : {"float", "int", "bool", "choice", "pair"}, default "float"
        ``"pair"``: two floats ``(low, high)`` with ``low <= high``, both in the range.
    lo, hi : float, optional
        The valid range (None: unbounded on that side).
    lo_open, hi_open : bool, default False
        Exclude the bound itself (``lo_open=True`` with ``lo=0`` means ``> 0``).
    log : bool, default False
        Shown on a logarithmic slider.
    ui : (float, float), optional
        The slider's range, inside the valid range (default: the valid range).
    choices : tuple, optional
        The valid values of a ``"choice"`` (its dropdown's options, in order); for a
        number, preset values its dropdown offers (any valid value is still accepted).
    none : str, optional
        If given, None is also valid, and this says what it means ("full batch").
    special : tuple of str, optional
        Words also valid as they are (``"auto"``).
    text : str, optional
        The valid range in words, when the generated text would be unreadable
        (``"an integer from 0 to 2**63 - 1"``).
    widget : {"", "text"}, default ""
        ``"text"``: a number typed into a box rather than a slider (a learner types any
        value; the Param refuses a bad one with its message).
    doc : str
        One line for tooltips and ``--help``.
    """

    name: str
    default: object
    kind: str = "float"
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    log: bool = False
    ui: tuple[float, float] | None = None
    choices: tuple = ()
    none: str = ""
    special: tuple = ()
    text: str = ""
    widget: str = ""
    doc: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {self.kind!r}")

    def _bounds_text(self, what: str) -> str:
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

    def range_text(self) -> str:
        """The valid values in words, e.g. ``"a number > 0"``, ``"one of auto, drop"``."""
        if self.text:
            core = self.text
        elif self.kind == "bool":
            core = "True or False"
        elif self.kind == "choice":
            core = "one of " + ", ".join(map(str, self.choices))
        elif self.kind == "pair":
            inner = self._bounds_text("each").replace("each ", "")
            core = f"a pair (low, high) with low <= high, each {inner}"
        else:
            core = self._bounds_text("an integer" if self.kind == "int" else "a number")
        extra = [repr(s) for s in self.special]
        if self.none:
            extra.append(f"None for {self.none}")
        if extra:
            core += ", or " + " or ".join(extra) if len(extra) > 1 else f", or {extra[0]}"
        return core

    def error(self, value) -> ValueError:
        """The one message for a bad value: ``"<name> must be <range>; got <value>"``."""
        return ValueError(f"{self.name} must be {self.range_text()}; got {value!r}")

    def _number(self, value, bad):
        if isinstance(value, (bool, np.bool_, str, bytes)) or value is None:
            raise bad
        if self.kind == "int":
            if not isinstance(value, (int, np.integer)):
                raise bad
            v = int(value)
        else:
            if not isinstance(value, (int, float, np.integer, np.floating)):
                raise bad
            v = float(value)
            if not math.isfinite(v):
                raise bad
        if self.lo is not None and (v < self.lo or (self.lo_open and v == self.lo)):
            raise bad
        if self.hi is not None and (v > self.hi or (self.hi_open and v == self.hi)):
            raise bad
        return v

    def check(self, value):
        """``value`` in its canonical type, or a ValueError naming the parameter and its range.

        Booleans and strings are never numbers (``True`` is not 1, ``"0.1"`` is not
        0.1), floats are never integers (``3.0`` is not ``3``), and NaN or infinity is
        never a number: the same rule for every setting of every table.
        """
        bad = self.error(value)
        if value is None:
            if self.none:
                return None
            raise bad
        if isinstance(value, str) and value in self.special:
            return value
        if self.kind == "bool":
            if not isinstance(value, (bool, np.bool_)):
                raise bad
            return bool(value)
        if self.kind == "choice":
            if isinstance(value, (bool, np.bool_)) or value not in self.choices:
                raise bad
            return value
        if self.kind == "pair":
            if isinstance(value, (str, bytes)):
                raise bad
            try:
                lo, hi = value
            except (TypeError, ValueError):
                raise bad from None
            lo, hi = self._number(lo, bad), self._number(hi, bad)
            if lo > hi:
                raise bad
            return (lo, hi)
        return self._number(value, bad)

    @property
    def ui_range(self) -> tuple[float, float]:
        """The slider's (min, max)."""
        if self.ui is not None:
            return self.ui
        lo = self.lo if self.lo is not None else 0.0
        hi = self.hi if self.hi is not None else max(10.0, 10 * abs(self.default or 0))
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
