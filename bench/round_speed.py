"""Seconds per FedAvg round: a tutorial loop, Flower, our engines and the FLOP limit.

For each configuration the script runs a few rounds of the same FedAvg job
(same model, IID partition, C, E, B, lr; the global model evaluated on the full
test set after every round) with

1. ``tutorial``   -- ``tutorial_loop.py``: DataLoader per client, deepcopy, SGD;
2. ``flower``     -- ``flower_fedavg.py``: Flower's simulation runtime (Ray), in
   a subprocess so that Ray's processes and threads do not linger;
3. ``sequential`` -- ``Simulation(..., engine="sequential")``;
4. ``vectorized`` -- ``Simulation(..., engine="vectorized")``, if registered;
5. ``FLOP limit`` -- the time the round's training arithmetic alone would take
   at this machine's peak float32 matmul rate, measured in the same run:
   ``3 x forward FLOPs per sample x samples per round / peak FLOP/s``
   (backward ~ 2x forward; evaluation excluded).

and prints one table: median seconds per round after ``--warmup`` discarded
rounds, the same excluding test evaluation ("train s"), training samples per
second (over "train s") and the FLOP limit as a percentage of "train s"; "eval %" is the
share of the round spent evaluating the global model on the 10,000 test images.

Usage::

    export FEDLAB_DATA_DIR=/work/shared/data FEDLAB_OFFLINE=1
    python bench/round_speed.py                    # everything (~30 min on 2 cores)
    python bench/round_speed.py --quick            # a check run, about a minute
    python bench/round_speed.py --configs 2nn-e1 cnn-e1 --skip-flower --rounds 3
    python bench/round_speed.py --algorithms --configs 2nn-e1   # every algorithm vs FedAvg

With ``--algorithms`` (all of them, or the names given) a second table times each
algorithm's round on the vectorised engine beside FedAvg's, interleaved (every
algorithm runs one block of rounds, then the next, ``--repeats`` times, and the
best block median counts), so that a change of machine load hits all of them alike.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # tutorial_loop, flower_fedavg live beside this file

from fedlab_widgets import Simulation, algorithms, get_model, load_mnist, partition  # noqa: E402
from fedlab_widgets.engines import ENGINES  # noqa: E402
from tutorial_loop import TutorialFedAvg  # noqa: E402


@dataclass(frozen=True)
class Config:
    name: str
    model: str
    num_clients: int
    client_fraction: float
    local_epochs: int
    batch_size: int
    lr: float = 0.1

    def label(self) -> str:
        return (f"{self.model.upper()} K={self.num_clients} C={self.client_fraction:g} "
                f"E={self.local_epochs} B={self.batch_size}")


CONFIGS = {c.name: c for c in [
    Config("2nn-e1", "2nn", 100, 0.1, 1, 10),
    Config("2nn-e5", "2nn", 100, 0.1, 5, 10),
    Config("cnn-e1", "cnn", 100, 0.1, 1, 50),
    Config("cnn-b10", "cnn", 100, 0.1, 1, 10),
    Config("2nn-k1000", "2nn", 1000, 0.01, 1, 10),
]}


# -- the FLOP limit ------------------------------------------------------------------------
def forward_flops_per_sample(model_name: str) -> int:
    """Forward FLOPs (2 per multiply-add) of one MNIST image, counted by torch."""
    model = get_model(model_name)
    x = torch.zeros(64, 1, 28, 28)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() // 64


def peak_matmul_flops(n: int = 2048, repeats: int = 5) -> float:
    """Best-of-``repeats`` float32 FLOP/s of an ``n x n`` matmul on all torch threads."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up: first call allocates and picks a kernel
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


# -- the runners: each returns per-round dicts with seconds, train_seconds, samples --------
def run_tutorial(cfg: Config, parts, rounds: int) -> list[dict]:
    fl = TutorialFedAvg(cfg.model, parts, client_fraction=cfg.client_fraction,
                        local_epochs=cfg.local_epochs, batch_size=cfg.batch_size, lr=cfg.lr)
    return [fl.step() for _ in range(rounds)]


def run_engine(cfg: Config, engine: str, train, test, parts, rounds: int,
               algorithm: str = "fedavg") -> list[dict]:
    sim = Simulation(cfg.model, train, test, parts, client_fraction=cfg.client_fraction,
                     local_epochs=cfg.local_epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                     engine=engine, num_threads=None,  # the table's --threads governs
                     algorithm=algorithm)
    # Time the test evaluation separately by wrapping the instance's evaluate();
    # Simulation.rounds() calls self.evaluate() once per evaluated round.
    eval_seconds = []
    plain_evaluate = sim.evaluate

    def timed_evaluate():
        t0 = time.perf_counter()
        out = plain_evaluate()
        eval_seconds.append(time.perf_counter() - t0)
        return out

    sim.evaluate = timed_evaluate
    out = []
    for rec in sim.rounds(rounds):  # eval_every=1: one evaluation per round
        out.append({"accuracy": rec.accuracy, "samples": rec.samples, "seconds": rec.seconds,
                    "train_seconds": rec.seconds - eval_seconds[-1]})
    return out


def run_flower_subprocess(cfg: Config, rounds: int, cpus_per_client: float,
                          timeout: float) -> list[dict] | str:
    """Flower in a fresh interpreter; returns the per-round dicts or an "n/a (...)" reason."""
    cmd = [sys.executable, str(HERE / "flower_fedavg.py"), "--model", cfg.model,
           "--clients", str(cfg.num_clients), "-C", str(cfg.client_fraction),
           "-E", str(cfg.local_epochs), "-B", str(cfg.batch_size), "--lr", str(cfg.lr),
           "--rounds", str(rounds), "--cpus-per-client", str(cpus_per_client), "--json"]
    reason = ""
    # Two attempts: on a loaded machine Ray's raylet can give up waiting (a
    # hard-coded 15 s) for its dashboard agent to start, and the run then fails.
    for _ in range(2):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            reason = f"n/a (timed out after {timeout:.0f} s)"
            continue
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
        if p.returncode == 0 and lines:
            return json.loads(lines[-1])["records"]
        err = (p.stderr.strip().splitlines() or ["no output"])[-1]
        reason = f"n/a ({err[:100]})"
    return reason


def algorithm_table(cfg: Config, names, train, test, parts, rounds: int, warmup: int,
                    repeats: int) -> None:
    """Each algorithm's round on the vectorised engine beside FedAvg's, interleaved."""
    best: dict[str, dict] = {}
    for _ in range(repeats):
        for name in names:
            r = summarise(run_engine(cfg, "vectorized", train, test, parts, warmup + rounds,
                                     algorithm=name), warmup)
            if name not in best or r["seconds"] < best[name]["seconds"]:
                best[name] = r
    base = best["fedavg"]
    print(f"\n{cfg.label()}, vectorized engine: best of {repeats} interleaved blocks of "
          f"{rounds} rounds (medians)")
    print(f"{'algorithm':<14}{'s/round':>9}{'train s':>9}{'x FedAvg':>10}{'train x':>9}")
    for name in names:
        r = best[name]
        print(f"{name:<14}{r['seconds']:>9.3f}{r['train_seconds']:>9.3f}"
              f"{r['seconds'] / base['seconds']:>10.2f}{r['train_seconds'] / base['train_seconds']:>9.2f}")
    sys.stdout.flush()


# -- the table -------------------------------------------------------------------------------
def summarise(records: list[dict], warmup: int) -> dict:
    """Medians over the rounds after the warm-up."""
    kept = records[warmup:] or records[-1:]
    s = statistics.median(r["seconds"] for r in kept)
    t = statistics.median(r["train_seconds"] for r in kept)
    n = statistics.median(r["samples"] for r in kept)
    return {"seconds": s, "train_seconds": t, "samples": n, "samples_per_s": n / t,
            "rounds": len(kept)}


def machine_info() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (f"{datetime.datetime.now().isoformat(timespec='seconds')} | {cpu}, "
            f"{os.cpu_count()} logical CPUs | torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads | load average {load}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Seconds per FedAvg round, five ways")
    ap.add_argument("--rounds", type=int, default=5, help="measured rounds (after the warm-up)")
    ap.add_argument("--warmup", type=int, default=1, help="rounds run first and discarded")
    ap.add_argument("--configs", nargs="+", choices=list(CONFIGS),
                    help="configurations to run (default: all; with --quick: 2nn-e1)")
    ap.add_argument("--skip-flower", action="store_true")
    ap.add_argument("--skip-tutorial", action="store_true")
    ap.add_argument("--flower-cpus-per-client", type=float, default=1,
                    help="Ray resources per Flower client: cores / this = parallel clients")
    ap.add_argument("--flower-timeout", type=float, default=900,
                    help="seconds before a Flower run is abandoned (a crashed raylet hangs it)")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    ap.add_argument("--quick", action="store_true",
                    help="check run: 2NN E=1 only, 2 rounds after 1 warm-up")
    ap.add_argument("--algorithms", nargs="*", choices=list(algorithms.NAMES), default=None,
                    help="time these algorithms (none given: all) against FedAvg, "
                         "instead of the engine table")
    ap.add_argument("--repeats", type=int, default=3,
                    help="interleaved blocks per algorithm with --algorithms (best counts)")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.warmup = min(args.rounds, 2), min(args.warmup, 1)
    args.configs = args.configs or (["2nn-e1"] if args.quick else list(CONFIGS))
    if args.threads:
        torch.set_num_threads(args.threads)

    print(machine_info())
    if args.algorithms is not None:
        names = ["fedavg"] + [n for n in (args.algorithms or algorithms.NAMES) if n != "fedavg"]
        print(f"{args.rounds} measured rounds after {args.warmup} warm-up; full test-set "
              f"evaluation every round")
        train, test = load_mnist()
        for name in args.configs:
            cfg = CONFIGS[name]
            parts = partition(train.labels, "iid", cfg.num_clients, seed=0)
            algorithm_table(cfg, names, train, test, parts, args.rounds, args.warmup, args.repeats)
        return
    # Best of 10: on a shared machine a single slow repeat would lower the peak
    # and push rows above 100% of the "limit".
    peak = peak_matmul_flops(2048, repeats=10)
    print(f"peak float32 matmul: {peak / 1e9:.1f} GFLOP/s (best of 10, 2048^2, "
          f"{torch.get_num_threads()} threads)")
    engines = ["sequential"] + (["vectorized"] if "vectorized" in ENGINES else [])
    flower_note = ""
    if not args.skip_flower:
        from flower_fedavg import FLOWER_AVAILABLE, FLOWER_ERROR, FLOWER_VERSION
        flower_note = (f"Flower {FLOWER_VERSION}, Ray backend, {args.flower_cpus_per_client:g} "
                       f"CPU per client" if FLOWER_AVAILABLE else f"n/a ({FLOWER_ERROR})")
        print(flower_note)
    print(f"{args.rounds} measured rounds after {args.warmup} warm-up; medians; "
          f"full test-set evaluation every round\n")

    train, test = load_mnist()
    total = args.warmup + args.rounds
    head = (f"{'configuration':<30}{'row':<12}{'s/round':>9}{'train s':>9}{'eval %':>8}"
            f"{'samples/s':>11}{'% FLOP limit':>14}")
    print(head)
    print("-" * len(head))
    speedups = []
    for name in args.configs:
        cfg = CONFIGS[name]
        parts = partition(train.labels, "iid", cfg.num_clients, seed=0)
        rows: dict[str, dict | str] = {}
        if not args.skip_tutorial:
            rows["tutorial"] = summarise(run_tutorial(cfg, parts, total), args.warmup)
        if not args.skip_flower:
            if FLOWER_AVAILABLE:
                recs = run_flower_subprocess(cfg, total, args.flower_cpus_per_client,
                                             args.flower_timeout)
                rows["flower"] = recs if isinstance(recs, str) else summarise(recs, args.warmup)
            else:
                rows["flower"] = flower_note
        for engine in engines:
            rows[engine] = summarise(run_engine(cfg, engine, train, test, parts, total), args.warmup)

        samples = next(r["samples"] for r in rows.values() if isinstance(r, dict))
        limit = 3 * forward_flops_per_sample(cfg.model) * samples / peak
        label = cfg.label()
        for row, r in rows.items():
            if isinstance(r, str):
                print(f"{label:<30}{row:<12}{r}")
            else:
                share = 100 * (1 - r["train_seconds"] / r["seconds"])
                print(f"{label:<30}{row:<12}{r['seconds']:>9.3f}{r['train_seconds']:>9.3f}"
                      f"{share:>7.0f}%{r['samples_per_s']:>11,.0f}"
                      f"{100 * limit / r['train_seconds']:>13.1f}%")
            label = ""
        print(f"{'':<30}{'FLOP limit':<12}{'':>9}{limit:>9.4f}{'':>8}{samples / limit:>11,.0f}"
              f"{100:>13.1f}%")
        ours = engines[-1]
        for other in ("tutorial", "flower"):
            if isinstance(rows.get(other), dict):
                speedups.append(f"{cfg.name}: {ours} is {rows[other]['seconds'] / rows[ours]['seconds']:.1f}x "
                                f"faster than {other} per round "
                                f"({rows[other]['train_seconds'] / rows[ours]['train_seconds']:.1f}x "
                                f"on training alone)")
        sys.stdout.flush()

    print("\nspeedups (ratio of median seconds per round):")
    for s in speedups:
        print("  " + s)


if __name__ == "__main__":
    main()
