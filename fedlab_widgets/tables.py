"""Results as text tables a notebook prints (aligned columns, numbers formatted once)."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

__all__ = ["format_table"]


def _fmt(v, floatfmt: str) -> str:
    if v is None:
        return "-"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (float, np.floating)):
        return str(float(v)) if not math.isfinite(v) else format(float(v), floatfmt)
    return str(v)


def format_table(rows: Sequence[Mapping], columns: Sequence[str] | None = None, *,
                 floatfmt: str = ".4g") -> str:
    """Rows of results as a fixed-width text table (for ``print``).

    Parameters
    ----------
    rows : list of dict
        E.g. the result of :func:`sweep`.
    columns : list of str, optional
        The columns to show, in order (default: every key of the first row whose
        values are numbers, strings or None -- so histories are left out).
    floatfmt : str, default ".4g"

    Examples
    --------
    >>> print(format_table([{"E": 1, "acc": 0.91234}, {"E": 5, "acc": None}]))
    E  acc
    1  0.9123
    5  -
    """
    rows = list(rows)
    if not rows:
        return ""
    if columns is None:
        scalar = (int, float, str, np.integer, np.floating, type(None))
        columns = [k for k, v in rows[0].items() if isinstance(v, scalar)]
    cells = [[str(c) for c in columns]] + [[_fmt(r.get(c), floatfmt) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("  ".join(x.ljust(w) for x, w in zip(line, widths)).rstrip() for line in cells)
