"""How long does each notebook take, top to bottom, at its stored settings?

Runs every notebook in ``notebooks/`` on its own (``pytest --nbval-lax``, as the test suite
does: a fresh kernel, every cell), one after the other, and prints its time (pytest's own
figure for the file: the kernel's start and every cell, what a learner waits for with Run
All) beside the figure the instructor's guide states, and whether it is within the 60 s
budget; also the whole process's wall time (with pytest's own start-up).

    FEDLAB_DATA_DIR=/path/to/data python bench/notebook_times.py            # all of them
    FEDLAB_DATA_DIR=/path/to/data python bench/notebook_times.py 06 13      # some
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
BUDGET = 60.0


def guide_figures() -> dict[str, int]:
    """The guide's measured run time of each notebook (its table's last column)."""
    text = (NOTEBOOKS / "README.md").read_text()
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r"^\| `([0-9][0-9][a-z]?-[a-z0-9-]+)` \|.*\| (\d+) s \|$", text, re.M)}


def run(path: Path) -> tuple[float, float, bool]:
    """(notebook seconds, process seconds, passed)."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "-q", "-p",
                           "no:cacheprovider", str(path)], cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    m = re.search(r" in ([0-9.]+)s", done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "")
    return (float(m.group(1)) if m else wall), wall, done.returncode == 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("only", nargs="*", help="notebook numbers or names to run (default: all)")
    args = ap.parse_args()
    guide = guide_figures()
    paths = sorted(NOTEBOOKS.glob("[0-9][0-9]*-*.ipynb"))
    if args.only:
        paths = [p for p in paths if any(p.stem.startswith(o) for o in args.only)]
    total, over = 0.0, []
    print(f"{'notebook':<38}{'guide':>7}{'measured':>10}  within {BUDGET:.0f} s  (process)")
    for p in paths:
        seconds, wall, ok = run(p)
        total += seconds
        if seconds > BUDGET:
            over.append(p.stem)
        g = guide.get(p.stem)
        print(f"{p.stem:<38}{(f'{g} s' if g else '-'):>7}{seconds:>9.0f} s  "
              f"{'yes' if seconds <= BUDGET else 'NO ':<9}  ({wall:.0f} s)"
              f"{'' if ok else '  (a cell failed)'}", flush=True)
    print(f"{len(paths)} notebooks, {total:.0f} s together ({total / 60:.1f} min)"
          + (f"; over {BUDGET:.0f} s: {', '.join(over)}" if over else ""))


if __name__ == "__main__":
    main()
