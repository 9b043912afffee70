"""Vertical FL and split learning (issue 25, notebook 09b): the figures behind the notebook's
claims, on seeds 0-2, and what a step costs.

1. Two halves (VerticalFederation, embedding 16, hidden 64, lr 0.1, B = 64, 2 epochs on all of
   MNIST): accuracy together and each half alone.
2. Split learning on 10,000 digits, 10 IID clients, the 2NN cut after its first layer, lr 0.05,
   B = 10, 3 epochs: sequential, SplitFed, FedAvg (E = 1, C = 1): accuracy and MB per epoch.
3. The norm and direction attacks (digit 0 against the rest, 1 epoch): leak AUC and test AUC
   without a defence, with iso noise (1x) and max_norm.
4. Seconds per epoch of each, on this machine (one thread).

    FEDLAB_DATA_DIR=/path/to/data python bench/vertical.py [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from fedlab_widgets import Simulation, load_mnist, partition
from fedlab_widgets.vertical import SplitLearning, VerticalFederation, direction_attack, norm_attack


def halves(train, test, seed):
    t = time.perf_counter()
    fed = VerticalFederation(train, test, layout="halves", seed=seed)
    fed.fit(2)
    per_epoch = (time.perf_counter() - t) / 2
    alone = [fed.alone(p, epochs=2) for p in range(2)]
    print(f"  seed {seed}: together {fed.history[-1]['accuracy']:.2%}, left alone {alone[0]:.2%}, "
          f"right alone {alone[1]:.2%}  ({per_epoch:.1f} s per epoch)")


def split(train, test, seed):
    small = train.subset(torch.arange(10_000))
    parts = partition(small.labels, "iid", 10, seed=seed)
    cells = []
    for schedule in ("sequential", "splitfed"):
        t = time.perf_counter()
        sl = SplitLearning(small, test, parts, schedule=schedule, lr=0.05, batch_size=10, seed=seed)
        sl.fit(3)
        cells.append(f"{schedule} " + " ".join(f"{h['accuracy']:.1%}" for h in sl.history)
                     + f" ({sl.history[0]['bytes'] / 1e6:.1f} MB/epoch, {(time.perf_counter() - t) / 3:.1f} s/epoch)")
    t = time.perf_counter()
    h = Simulation("2nn", small, test, parts, client_fraction=1.0, local_epochs=1, batch_size=10,
                   lr=0.05, seed=seed).run(3)
    cells.append("FedAvg " + " ".join(f"{a:.1%}" for a in h.accuracy)
                 + f" ({h.bytes_total[0] / 1e6:.1f} MB/round, {(time.perf_counter() - t) / 3:.1f} s/round)")
    print(f"  seed {seed}: " + "; ".join(cells))


def leakage(train, test, seed):
    out = []
    for name, kw in [("none", {}), ("iso 1x", dict(defence="iso", noise=1.0)), ("max_norm", dict(defence="max_norm"))]:
        run = VerticalFederation(train, test, positive=0, seed=seed, **kw)
        run.fit(1)
        g = torch.cat([r[0] for r in run.received])
        y = torch.cat([r[1] for r in run.received]).numpy()
        first = np.nanmean(run.step_leak_aucs()[:50])
        out.append(f"{name}: norm {norm_attack(g, y).auc:.2f} (first 50 {first:.2f}), direction "
                   f"{direction_attack(g[-6400:], y[-6400:]).auc:.2f}, test AUC {run.history[-1]['test_auc']:.4f}")
    print(f"  seed {seed}: " + "; ".join(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    torch.set_num_threads(1)
    train, test = load_mnist()
    for title, fn in [("1. two halves, 2 epochs", halves), ("2. split learning vs FedAvg, 3 epochs", split),
                      ("3. label leakage, 1 epoch", leakage)]:
        print(title)
        for seed in args.seeds:
            fn(train, test, seed)


if __name__ == "__main__":
    main()
