"""McMahan et al. (2017), Tables 1 and 2, reproduced with the paper's own protocol.

The paper ("Communication-Efficient Learning of Deep Networks from Decentralized
Data", AISTATS 2017) counts the communication rounds FedAvg needs to reach a target
test accuracy on MNIST with K=100 clients and C=0.1. The rows reproduced here:

=====  =====  ========  =======  ======  ====  ============
table  model  E         B        target  IID   non-IID
=====  =====  ========  =======  ======  ====  ============
1      2NN    1         10       97%       87   664
1      2NN    1         inf      97%     1474  1796   (FedSGD)
2      CNN    1         10       99%       34
2      CNN    5         10       99%       20
=====  =====  ========  =======  ======  ====  ============

non-IID is the paper's pathological split: sort by label, 200 shards of 300 images,
2 per client (``partition(labels, "shards", 100, shards_per_client=2)``).

The protocol, as the paper describes it:

- **Rounds to target** read the monotone curve (the best test accuracy over all
  prior rounds) with linear interpolation between rounds
  (``History.rounds_to(target, interpolate=True)``); the plain first round at or
  above the target is printed beside it. The test set is evaluated every round.
- **Learning rate** tuned per row on a multiplicative grid of resolution 10^(1/3)
  (``LR_GRID``, 0.001 to 10). The grid is walked from a starting value outwards, in
  both directions, until a rate does worse than the best so far: the best rate is
  then interior (a worse rate was run on each side of it), and the script says so.
  ``--full-grid`` runs every value instead. Once a best is known, a run that has not
  reached the target in twice its rounds is stopped and shown as ">N": it cannot win.
- **Medians over seeds** at the best rate: 3 seeds for IID rows, 5 for non-IID
  (seed = partition, initial weights, client sampling and data order).
- **Raw [0, 1] pixels**, no learning-rate decay, no momentum. The paper does not say
  it standardised the inputs, so the package's standardisation is undone here
  (``--pixels normalised`` keeps it, to measure what it changes).

Usage::

    export FEDLAB_DATA_DIR=/work/shared/data FEDLAB_OFFLINE=1
    python bench/mcmahan.py                          # every row (see bench/README.md for the time)
    python bench/mcmahan.py --rows 2nn-iid-b10       # one row
    python bench/mcmahan.py --table 2 --seeds 1      # Table 2, seed 0 only
    python bench/mcmahan.py --out bench/results/mcmahan.json --plot bench/results/mcmahan
    python bench/mcmahan.py --replot bench/results/mcmahan.json --plot bench/figures/mcmahan

``tests/test_mcmahan.py`` imports :func:`run_one`, ``ROWS`` and ``BEST_LR``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import time
from functools import lru_cache

from fedlab_widgets import Simulation, load_mnist, partition
from round_speed import machine_info  # the same machine line as the speed table

__all__ = ["Row", "ROWS", "LR_GRID", "BEST_LR", "run_one", "tune", "main"]

#: The multiplicative grid, resolution 10^(1/3): 0.001, 0.00215, ..., 4.64, 10.
LR_GRID = tuple(float(f"{10 ** (k / 3):.3g}") for k in range(-9, 4))
NUM_CLIENTS, CLIENT_FRACTION = 100, 0.1


@dataclasses.dataclass(frozen=True)
class Row:
    """One cell of the paper's tables."""

    key: str
    table: int
    model: str
    scheme: str          # "iid" or "shards"
    local_epochs: int
    batch_size: int | None  # None = the whole local dataset (B = infinity)
    target: float
    paper: int           # the paper's rounds to target
    seeds: int           # medians over this many seeds
    start_lr: float      # where the grid walk starts

    @property
    def label(self) -> str:
        b = "inf" if self.batch_size is None else self.batch_size
        part = "IID" if self.scheme == "iid" else "non-IID"
        return f"{self.model.upper()} E={self.local_epochs} B={b} {part}"


ROWS = (
    Row("2nn-iid-b10", 1, "2nn", "iid", 1, 10, 0.97, 87, 3, 0.1),
    Row("2nn-noniid-b10", 1, "2nn", "shards", 1, 10, 0.97, 664, 5, 0.1),
    Row("2nn-iid-fedsgd", 1, "2nn", "iid", 1, None, 0.97, 1474, 3, 1.0),
    Row("2nn-noniid-fedsgd", 1, "2nn", "shards", 1, None, 0.97, 1796, 5, 0.464),
    Row("cnn-iid-e1-b10", 2, "cnn", "iid", 1, 10, 0.99, 34, 3, 0.1),
    Row("cnn-iid-e5-b10", 2, "cnn", "iid", 5, 10, 0.99, 20, 3, 0.1),
)
ROW = {r.key: r for r in ROWS}

#: The grid's best rate per row (seed 0, raw pixels), from the run recorded in
#: bench/README.md; the CI regression tests use it.
BEST_LR = {"2nn-iid-b10": 0.215, "cnn-iid-e1-b10": 0.215, "cnn-iid-e5-b10": 0.215}


@lru_cache(maxsize=2)
def _data(pixels: str):
    if pixels not in ("raw", "normalised"):
        raise ValueError(f"pixels must be 'raw' or 'normalised', got {pixels!r}")
    train, test = load_mnist()
    if pixels == "raw":
        train, test = (dataclasses.replace(d, images=d.images * d.std + d.mean)
                       for d in (train, test))
    return train, test


def make_simulation(row: Row, lr: float, seed: int = 0, *, pixels: str = "raw",
                    num_threads="auto") -> Simulation:
    """The paper's setting for ``row``: K=100, C=0.1, plain SGD at ``lr``, seeded by ``seed``."""
    train, test = _data(pixels)
    params = {"shards_per_client": 2} if row.scheme == "shards" else {}
    parts = partition(train.labels, row.scheme, NUM_CLIENTS, seed=seed, **params)
    return Simulation(row.model, train, test, parts, client_fraction=CLIENT_FRACTION,
                      local_epochs=row.local_epochs, batch_size=row.batch_size, lr=lr,
                      seed=seed, num_threads=num_threads)


def run_one(row: Row | str, lr: float, seed: int = 0, *, max_rounds: int | None = None,
            pixels: str = "raw", num_threads="auto") -> dict:
    """Train until ``row.target`` or ``max_rounds`` (default 3x the paper's rounds).

    Returns a dict: ``rounds`` (interpolated on the monotone curve, None if not
    reached), ``first`` (first round at or above the target), ``best``, ``ran``
    (rounds run), ``seconds`` and ``diverged``.
    """
    row = ROW[row] if isinstance(row, str) else row
    max_rounds = max_rounds or 3 * row.paper
    t0 = time.perf_counter()
    sim = make_simulation(row, lr, seed, pixels=pixels, num_threads=num_threads)
    h = sim.run(max_rounds, target_accuracy=row.target)
    return {"lr": lr, "seed": seed, "rounds": h.rounds_to(row.target, interpolate=True),
            "first": h.rounds_to(row.target), "best": h.best_accuracy, "ran": len(h),
            "seconds": time.perf_counter() - t0, "diverged": h.diverged}


def _shown(res: dict) -> str:
    return f"{res['rounds']:.1f}" if res["rounds"] is not None else f">{res['ran']}"


def _better(a: dict, b: dict | None) -> bool:
    return a["rounds"] is not None and (b is None or b["rounds"] is None or a["rounds"] < b["rounds"])


def tune(row: Row, *, seed: int = 0, full_grid: bool = False, pixels: str = "raw",
         num_threads="auto", log=print) -> tuple[list[dict], dict | None, bool]:
    """Walk ``LR_GRID`` for ``row`` on ``seed``; return (runs, best run, best is interior)."""
    runs: list[dict] = []
    best = None

    def one(lr):
        nonlocal best
        cap = 3 * row.paper
        if best is not None and best["rounds"] is not None:
            cap = min(cap, math.ceil(2 * best["rounds"]) + 1)
        res = run_one(row, lr, seed, max_rounds=cap, pixels=pixels, num_threads=num_threads)
        runs.append(res)
        log(f"  {row.key:18s} lr={lr:<7g} rounds {_shown(res):>7} (first {res['first']})  "
            f"best acc {res['best']:.4f}  {res['seconds']:6.1f} s"
            + ("  diverged" if res["diverged"] else ""))
        if _better(res, best):
            best = res
        return res

    if full_grid:
        for lr in LR_GRID:
            one(lr)
    else:
        i0 = LR_GRID.index(row.start_lr)
        one(LR_GRID[i0])
        for step in (1, -1):            # up, then down, while the rounds keep falling
            if step == -1 and best is not None and best["lr"] > LR_GRID[i0]:
                break                   # the start is already a worse rate below the best
            i = i0 + step
            while 0 <= i < len(LR_GRID):
                if not _better(one(LR_GRID[i]), None) or best["lr"] != LR_GRID[i]:
                    break
                i += step
    tried = sorted(r["lr"] for r in runs)
    interior = best is not None and tried[0] < best["lr"] < tried[-1]
    runs.sort(key=lambda r: r["lr"])
    return runs, best, interior


def reproduce(rows, *, seeds: int | None = None, full_grid: bool = False, pixels: str = "raw",
              num_threads="auto", log=print, save=None) -> dict:
    """Tune every row on seed 0, then run the other seeds at the best rate.

    ``save(result)`` is called after every row, so a long run keeps what it finished."""
    out = {"date": time.strftime("%Y-%m-%d"), "machine": machine_info(), "pixels": pixels,
           "rows": {}}
    for row in rows:
        t0 = time.perf_counter()
        runs, best, interior = tune(row, full_grid=full_grid, pixels=pixels,
                                    num_threads=num_threads, log=log)
        per_seed = [best] if best else []
        if best:
            for seed in range(1, seeds or row.seeds):
                res = run_one(row, best["lr"], seed, pixels=pixels, num_threads=num_threads)
                log(f"  {row.key:18s} lr={best['lr']:<7g} seed {seed}  rounds {_shown(res):>7} "
                    f"(first {res['first']})  {res['seconds']:6.1f} s")
                per_seed.append(res)
        reached = [r["rounds"] if r["rounds"] is not None else math.inf for r in per_seed]
        out["rows"][row.key] = {
            **dataclasses.asdict(row), "grid": runs, "best_lr": best and best["lr"],
            "interior": interior, "seeds_run": per_seed,
            "median": statistics.median(reached) if reached else None,
            "median_first": statistics.median(r["first"] or math.inf for r in per_seed)
            if per_seed else None,
            "seconds": time.perf_counter() - t0}
        log(f"  {row.key}: {out['rows'][row.key]['seconds'] / 60:.1f} min")
        if save:
            save(out)
    return out


def _fmt(x) -> str:
    return "-" if x is None else (">cap" if x == math.inf else f"{x:.1f}")


def report(result: dict) -> str:
    """The summary table and the paper's relative claims, as text."""
    rows = result["rows"]
    lines = [f"{'row':<20}{'target':>7}{'best lr':>9}{'interior':>9}{'ours':>8}{'first':>7}"
             f"{'paper':>7}{'ours/paper':>11}  per seed"]
    for key, r in rows.items():
        ratio = (r["median"] / r["paper"]) if r["median"] not in (None, math.inf) else None
        lines.append(f"{key:<20}{r['target']:>7.0%}{r['best_lr'] or '-':>9}"
                     f"{'yes' if r['interior'] else 'NO':>9}{_fmt(r['median']):>8}"
                     f"{_fmt(r['median_first']):>7}{r['paper']:>7}"
                     f"{'-' if ratio is None else f'{ratio:.2f}':>11}  "
                     + " ".join(_fmt(s["rounds"]) for s in r["seeds_run"]))
    lines.append("")
    for key, r in rows.items():
        if r["median"] not in (None, math.inf):
            ok = r["median"] <= 1.3 * r["paper"]
            lines.append(f"criterion {key}: ours {r['median']:.1f} <= 1.3 x {r['paper']} = "
                         f"{1.3 * r['paper']:.1f}: {'holds' if ok else 'FAILS'}")
    claims = [("2nn-iid-fedsgd", "2nn-iid-b10", 5.0), ("2nn-noniid-fedsgd", "2nn-noniid-b10", 1.5),
              ("cnn-iid-e1-b10", "cnn-iid-e5-b10", 1.0)]
    for slow, fast, need in claims:
        if slow in rows and fast in rows and rows[fast]["median"] and rows[slow]["median"]:
            ours = rows[slow]["median"] / rows[fast]["median"]
            paper = rows[slow]["paper"] / rows[fast]["paper"]
            lines.append(f"claim {fast} beats {slow}: ours {ours:.1f}x, paper {paper:.1f}x, "
                         f"need > {need:g}x: {'holds' if ours > need else 'FAILS'}")
    return "\n".join(lines)


def plot(result: dict, prefix: str) -> list[str]:
    """One figure per table: lr -> rounds for every row, and ours against the paper."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    for table in (1, 2):
        rows = {k: r for k, r in result["rows"].items() if r["table"] == table}
        if not rows:
            continue
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
        for i, (key, r) in enumerate(rows.items()):
            c = f"C{i}"
            pts = [(g["lr"], g["rounds"]) for g in r["grid"] if g["rounds"] is not None]
            cut = [(g["lr"], g["ran"]) for g in r["grid"] if g["rounds"] is None and not g["diverged"]]
            bad = [(g["lr"], g["ran"]) for g in r["grid"] if g["rounds"] is None and g["diverged"]]
            if pts:
                ax1.plot(*zip(*pts), "o-", color=c, label=key)
            if cut:
                ax1.plot(*zip(*cut), "^", color=c, mfc="none")
            if bad:
                ax1.plot(*zip(*bad), "x", color=c)
            ax1.axhline(r["paper"], color=c, ls="--", lw=1)
        ax1.set(xscale="log", yscale="log", xlabel="client learning rate lr",
                ylabel=f"rounds to target (seed 0)",
                title=f"Table {table}: lr grid (dashed: paper; ^ not reached by then, x diverged)")
        ax1.legend(fontsize=8)
        keys = list(rows)
        x = range(len(keys))
        ours = [rows[k]["median"] if rows[k]["median"] not in (None, math.inf) else 0 for k in keys]
        ax2.bar([i - 0.2 for i in x], [rows[k]["paper"] for k in keys], 0.4, label="paper",
                color="0.6")
        ax2.bar([i + 0.2 for i in x], ours, 0.4, label="ours (median over seeds)", color="C0")
        for i, k in enumerate(keys):
            vals = [s["rounds"] for s in rows[k]["seeds_run"] if s["rounds"] is not None]
            ax2.plot([i + 0.2] * len(vals), vals, "k.", ms=4)
        ax2.set_xticks(list(x), [k.replace("-", "\n", 1) for k in keys], fontsize=8)
        ax2.set(yscale="log", ylabel="rounds to target", title="ours against the paper")
        ax2.legend()
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        tried = sorted({g["lr"] for r in rows.values() for g in r["grid"]})
        ax1.set_xticks(tried)
        ax1.xaxis.set_minor_formatter(NullFormatter())
        ax1.xaxis.set_major_formatter(plain)
        for ax in (ax1, ax2):
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(NullFormatter())
        fig.suptitle(f"McMahan et al. 2017, Table {table}, reproduced {result['date']} "
                     f"({result['pixels']} pixels)")
        fig.tight_layout()
        name = f"{prefix}-table{table}.png"
        os.makedirs(os.path.dirname(os.path.abspath(name)), exist_ok=True)
        fig.savefig(name, dpi=90)
        plt.close(fig)
        files.append(name)
    return files


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", nargs="+", choices=list(ROW), help="rows to run (default all)")
    ap.add_argument("--table", type=int, choices=(1, 2), help="only this table's rows")
    ap.add_argument("--seeds", type=int, help="seeds per row (default 3 IID, 5 non-IID)")
    ap.add_argument("--full-grid", action="store_true", help="run every lr of LR_GRID")
    ap.add_argument("--pixels", choices=("raw", "normalised"), default="raw")
    ap.add_argument("--threads", default="auto", help='torch threads: "auto" or a number')
    ap.add_argument("--out", help="write the results as JSON")
    ap.add_argument("--plot", help="write PREFIX-table1.png and PREFIX-table2.png")
    ap.add_argument("--replot", nargs="+", help="skip training: report and plot these JSON files")
    args = ap.parse_args(argv)

    if args.replot:
        result = {"rows": {}}
        for name in args.replot:  # several files: their rows together
            part = json.load(open(name))
            result = {**part, "rows": {**result["rows"], **part["rows"]}}
    else:
        rows = [ROW[k] for k in args.rows] if args.rows else list(ROWS)
        if args.table:
            rows = [r for r in rows if r.table == args.table]
        threads = args.threads if args.threads == "auto" else int(args.threads)
        print(f"McMahan et al. 2017 reproduced: K={NUM_CLIENTS}, C={CLIENT_FRACTION}, "
              f"{args.pixels} pixels, lr grid 10^(k/3)", flush=True)
        t0 = time.perf_counter()

        if args.out:
            os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)

        def save(result):
            if args.out:
                result["seconds"] = time.perf_counter() - t0
                with open(args.out, "w") as f:
                    json.dump(result, f, indent=1)

        result = reproduce(rows, seeds=args.seeds, full_grid=args.full_grid, pixels=args.pixels,
                           num_threads=threads, log=lambda s: print(s, flush=True), save=save)
        save(result)
        result["seconds"] = time.perf_counter() - t0
        print(f"\nall rows: {result['seconds'] / 60:.1f} min")
    print()
    print(report(result))
    if args.plot:
        print("wrote", ", ".join(plot(result, args.plot)))


if __name__ == "__main__":
    main()
