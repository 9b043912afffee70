"""Time and asynchrony (issue 23): power-of-choice against random selection, FedBuff against
synchronous FedAvg in simulated hours, and the cost of the event-driven path.

Part 1 (Cho, Wang & Joshi 2022): 2NN, 100 clients on Dirichlet(0.3), m = 3 per round (C = 0.03, the
paper's), E = 1, B = 50, lr 0.05, 60 rounds; uniform selection against power-of-choice with
d = 6, 15 and 100 (all clients): rounds to 80% and the mean of the last 10 rounds' accuracy, over
``--seeds`` seeds. The paper: "up to 3x faster and 10% higher test accuracy than random", and an
error floor that rises with d (selection skew).

Part 2 (Nguyen et al. 2022): logistic regression, 100 IID clients on "phones" (log-normal speeds,
sigma 1), always available so that speed alone matters; synchronous FedAvg (10 clients per round)
against FedBuff (10 training at once, K = 3) and FedAsync: simulated hours to 88% test accuracy.
The paper: FedBuff "3.3x more efficient than synchronous FL".

Part 3: real seconds per round of FedAvg without a clock, with one (devices="uniform"), and of
FedBuff with K = clients per round on the same devices (the same work, through the event queue),
at K = 100 and 1,000 clients (10% per round, logistic regression).

Usage::

    export FEDLAB_DATA_DIR=/work/shared/data FEDLAB_OFFLINE=1
    python bench/clock.py            # ~5 minutes
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from fedlab_widgets import Simulation, algorithms, load_mnist, partition
from fedlab_widgets.clock import Devices
from fedlab_widgets.experiments import format_table


def power_of_choice(train, test, seeds):
    rows = []
    for name, kw in [("uniform", {}), *[(f"power_of_choice d={d}", {"selection": "power_of_choice",
                                                                    "candidates": d}) for d in (6, 15, 100)]]:
        reach, last = [], []
        for seed in seeds:
            parts = partition(train.labels, "dirichlet", 100, alpha=0.3, seed=seed)
            h = Simulation("2nn", train, test, parts, client_fraction=0.03, batch_size=50, lr=0.05,
                           seed=seed, **kw).run(60)
            reach.append(h.rounds_to(0.8) or np.nan)
            last.append(float(np.nanmean(h.accuracy[-10:])))
        rows.append({"selection": name, "rounds to 80% (median)": float(np.nanmedian(reach)),
                     "reached": f"{np.isfinite(reach).sum()}/{len(seeds)}",
                     "last-10 accuracy (mean)": float(np.mean(last))})
    return rows


def asynchronous(train, test, target=0.88):
    phones = Devices.preset("phones", 100, seed=0).to_dict()
    always = Devices.from_table({**phones, "window_hours": [24.0] * 100})
    parts = partition(train.labels, "iid", 100, seed=0)
    rows = []
    for name, alg, rounds in (("FedAvg (synchronous)", None, 40),
                              ("FedBuff K=3", algorithms.get("fedbuff", buffer_size=3), 130),
                              ("FedAsync a=0.6", algorithms.get("fedasync"), 400)):
        t = time.perf_counter()
        h = Simulation("logreg", train, test, parts, client_fraction=0.1, seed=0, devices=always,
                       algorithm=alg, eval_every=2).run(rounds)
        r = h.rounds_to(target)
        hours = float(h.simulated_time[list(h.rounds).index(r)] / 3600) if r else float("nan")
        rows.append({"run": name, f"hours to {target:.0%}": hours, "rounds": r or float("nan"),
                     "updates aggregated": int(sum(x.reported for x in h.records[:r or len(h)])),
                     "mean staleness": float(np.nanmean(h.staleness)) if alg else 0.0,
                     "final accuracy": h.final_accuracy, "real s": time.perf_counter() - t})
    base = rows[0][f"hours to {target:.0%}"]
    for row in rows:
        row["speed-up"] = base / row[f"hours to {target:.0%}"]
    return rows


def event_cost(train, test):
    rows = []
    for K in (100, 1000):
        parts = partition(train.labels, "iid", K, seed=0)
        row = {"clients K": K}
        for name, kw in (("plain", {}), ("clock", {"devices": "uniform"}),
                         ("event queue (FedBuff)", {"devices": "uniform", "algorithm": "fedbuff"})):
            sim = Simulation("logreg", train, test, parts, client_fraction=0.1, seed=0, eval_every=1000, **kw)
            sim.run(1)                       # warm-up
            t = time.perf_counter()
            sim.run(5)
            row[f"{name} s/round"] = (time.perf_counter() - t) / 5
        rows.append(row)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args(argv)
    train, test = load_mnist()
    small = test.subset(torch.arange(2000))
    for title, fn in (("power of choice (2000 test digits)", lambda: power_of_choice(train, small, range(args.seeds))),
                      ("FedBuff against synchronous FedAvg, phones' speeds (2000 test digits)",
                       lambda: asynchronous(train, small)),
                      ("real time per round", lambda: event_cost(train, test))):
        t = time.perf_counter()
        rows = fn()
        print(f"\n## {title}  ({time.perf_counter() - t:.0f} s)\n")
        print(format_table(rows, floatfmt=".3g"))


if __name__ == "__main__":
    main()
