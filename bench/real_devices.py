"""Stragglers (the FedProx paper's MNIST claim), accuracy per megabyte under compression, and
personalisation.

Part 1, stragglers (Li et al. 2020, "Federated Optimization in Heterogeneous Networks", MNIST):
1000 clients holding 2 digits each with power-law sizes ("powerlaw" partition), multinomial
logistic regression, 10 clients per round, E = 20, B = 10, lr 0.03, and 90% of the sampled
clients stragglers that manage a uniform 10-100% of their local steps. FedAvg drops them
(as deployed); FedProx with mu = 0 and mu = 1, and FedNova, use their partial work. Reported:
median over seeds of the mean test accuracy over the last 20 rounds, and of the final one.

Part 2, compression (2NN, IID, K = 100, C = 0.1, E = 1, B = 10, lr 0.1): final accuracy and
megabytes uploaded for float32, top-10% and top-1% (error feedback), top-1% without it,
random-10%, and 8-bit and 2-bit QSGD.

Part 3, personalisation (2NN, shards and Dirichlet(0.1), K = 100, 20% of each client's data
held out): the global model's per-client spread, after one epoch of local fine-tuning, and
FedPer (and FedPer fine-tuned).

Usage::

    export FEDLAB_DATA_DIR=/work/shared/data FEDLAB_OFFLINE=1
    python bench/real_devices.py                 # ~6 minutes
    python bench/real_devices.py --parts 1 --seeds 5
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from fedlab_widgets import Simulation, algorithms, compression, load_mnist, partition
from fedlab_widgets.experiments import format_table
from fedlab_widgets.personalisation import finetune, spread


def stragglers(train, test, seeds, rounds):
    configs = [("FedAvg, stragglers dropped", "fedavg", "drop"),
               ("FedProx mu=0, partial work", algorithms.get("fedprox", mu=0.0), "partial"),
               ("FedProx mu=1, partial work", algorithms.get("fedprox", mu=1.0), "partial"),
               ("FedNova, partial work", "fednova", "partial")]
    rows = []
    for label, alg, mode in configs:
        last, final, secs = [], [], []
        for seed in seeds:
            parts = partition(train.labels, "powerlaw", 1000, seed=seed)
            t0 = time.perf_counter()
            h = Simulation("logreg", train, test, parts, client_fraction=0.01, local_epochs=20,
                           batch_size=10, lr=0.03, algorithm=alg, stragglers=0.9,
                           straggler_mode=mode, seed=seed).run(rounds)
            secs.append(time.perf_counter() - t0)
            last.append(float(np.nanmean(h.accuracy[-20:])))
            final.append(h.final_accuracy)
        rows.append({"configuration (90% stragglers)": label,
                     "mean acc, last 20 rounds (median)": float(np.median(last)),
                     "final acc (median)": float(np.median(final)),
                     "per seed (last 20)": " ".join(f"{v:.3f}" for v in last),
                     "s per run": float(np.mean(secs))})
        print(format_table(rows[-1:], floatfmt=".4f"), flush=True)
    return rows


def compressed(train, test, rounds):
    parts = partition(train.labels, "iid", 100, seed=0)
    configs = [("float32", None), ("top-10%", compression.get("topk", fraction=0.1)),
               ("top-1%", compression.get("topk", fraction=0.01)),
               ("top-1%, no error feedback", compression.get("topk", fraction=0.01, error_feedback=False)),
               ("rand-10% (unbiased)", compression.get("randk", fraction=0.1)),
               ("QSGD 8-bit", compression.get("quantize", bits=8)),
               ("QSGD 2-bit", compression.get("quantize", bits=2))]
    rows = []
    for label, comp in configs:
        t0 = time.perf_counter()
        h = Simulation("2nn", train, test, parts, client_fraction=0.1, batch_size=10, lr=0.1,
                       compression=comp, seed=0).run(rounds)
        rows.append({"update sent as": label, "final acc": h.final_accuracy,
                     "rounds to 95%": h.rounds_to(0.95) or f">{rounds}",
                     "kB up per client": h.bytes_up[0] / 10 / 1e3,
                     "MB up, all rounds": h.bytes_up.sum() / 1e6,
                     "s": time.perf_counter() - t0})
    return rows


def personal(train, test, rounds):
    rows = []
    for scheme, kw in (("shards", {}), ("dirichlet", {"alpha": 0.1})):
        parts = partition(train.labels, scheme, 100, seed=0, **kw)
        for alg in ("fedavg", "fedper"):
            sim = Simulation("2nn", train, test, parts, client_fraction=0.1, batch_size=10,
                             lr=0.05, algorithm=alg, local_test_fraction=0.2, seed=0,
                             eval_every=rounds)
            h = sim.run(rounds)
            for what, acc in ((f"{alg}", h.client_accuracy[-1]),
                              (f"{alg} + 1 epoch fine-tuning", finetune(sim, local_epochs=1))):
                s = spread(acc)
                rows.append({"partition": parts.label(), "model": what, "mean": s["mean"],
                             "10th pct": s["p10"], "90th pct": s["p90"], "worst": s["worst"],
                             "global test acc": h.final_accuracy if "fine" not in what else ""})
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", default="123")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=100, help="rounds of part 1")
    args = ap.parse_args()
    train, test = load_mnist()
    if "1" in args.parts:
        print(f"# 1. Stragglers: FedProx paper's MNIST set-up, {args.rounds} rounds, "
              f"seeds 0..{args.seeds - 1}")
        print(format_table(stragglers(train, test, range(args.seeds), args.rounds), floatfmt=".4f"))
    if "2" in args.parts:
        print("\n# 2. Compression: 2NN, IID, 30 rounds")
        print(format_table(compressed(train, test, 30), floatfmt=".4g"))
    if "3" in args.parts:
        print("\n# 3. Personalisation: per-client accuracy after 30 rounds")
        print(format_table(personal(train, test, 30), floatfmt=".3f"))


if __name__ == "__main__":
    main()
