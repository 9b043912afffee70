"""Attacks against defences: clean accuracy and backdoor success after a fixed number of rounds.

For IID and Dirichlet(0.5) partitions, every attack at 0%, 10%, 20% and 40% malicious
clients, under every aggregator, prints clean test accuracy (and, for backdoors, the
attack success rate: the share of triggered non-target test images classified as the
target) after ``--rounds`` rounds (a run that diverged counts as 0), then checks the claims
the literature makes.

Usage::

    export FEDLAB_DATA_DIR=/work/shared/data FEDLAB_OFFLINE=1
    python bench/robustness.py                 # the whole table, ~10 minutes on 2 cores
    python bench/robustness.py --quick         # IID, 20% only, a check run
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time

from fedlab_widgets import Simulation, algorithms, attacks, load_mnist, partition

SETTINGS = dict(client_fraction=0.2, local_epochs=1, batch_size=50, lr=0.05)  # 20 clients a round
AGGREGATORS = {
    "mean": {},
    "median": {},
    "trimmed_mean": {"trim_ratio": 0.2},
    "krum": {"num_byzantine": 8},
    "multikrum": {"num_byzantine": 8},
    "norm_clip": {"max_norm": 0.5},
}
ATTACKS = {
    "label_flip": {},
    "sign_flip": {"scale": 5.0},
    "gaussian": {"scale": 10.0},
    "backdoor": {"boost": 10.0},
    "backdoor (no boost)": {"boost": 1.0},
}


def run(train, test, parts, attack, agg, rounds, seed):
    alg = algorithms.get("fedavg", **({} if agg == "mean" else {"aggregator": agg, **AGGREGATORS[agg]}))
    sim = Simulation("2nn", train, test, parts, algorithm=alg, attack=attack, seed=seed,
                     eval_every=rounds, **SETTINGS)
    h = sim.run(rounds)
    if h.diverged:  # the model became NaN: as bad as it gets
        return 0.0, float("nan")
    return h.final_accuracy, float(h.attack_success[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.2, 0.4])
    ap.add_argument("--partitions", nargs="+", default=["iid", "dirichlet"])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.fractions, args.partitions = [0.2], ["iid"]
    train, test = load_mnist()
    print(f"2NN, K=100, C=0.2, E=1, B=50, lr=0.05, {args.rounds} rounds, seed {args.seed}; "
          f"aggregators {AGGREGATORS}")
    results = {}
    t0 = time.perf_counter()
    for pname in args.partitions:
        parts = partition(train, pname, 100, seed=0, **({"alpha": 0.5} if pname == "dirichlet" else {}))
        label = "IID" if pname == "iid" else "Dirichlet(0.5)"
        print(f"\n{label}: clean accuracy (backdoor success) after {args.rounds} rounds")
        print(f"{'attack':<22}{'malicious':>10}" + "".join(f"{a:>15}" for a in AGGREGATORS))
        rows = [("none", {}, 0.0)] + [(a, p, f) for (a, p), f in
                                       itertools.product(ATTACKS.items(), args.fractions)]
        for aname, params, frac in rows:
            attack = None if aname == "none" else attacks.get(aname.split(" ")[0], fraction=frac, **params)
            cells = []
            for agg in AGGREGATORS:
                acc, asr = run(train, test, parts, attack, agg, args.rounds, args.seed)
                results[pname, aname, frac, agg] = (acc, asr)
                cells.append(f"{acc:.3f}" + (f" ({asr:.2f})" if asr == asr else ""))
            print(f"{aname:<22}{frac:>10.0%}" + "".join(f"{c:>15}" for c in cells))
            sys.stdout.flush()
    print(f"\n{time.perf_counter() - t0:.0f} s")

    # -- the literature's claims, checked on what was measured -----------------------------
    def check(claim, ok):
        print(f"  [{'holds' if ok else 'DOES NOT HOLD'}] {claim}")

    print("\nclaims:")
    if ("iid", "sign_flip", 0.2, "mean") in results:
        r = {a: results["iid", "sign_flip", 0.2, a][0] for a in AGGREGATORS}
        check("IID, sign flipping at 20%: the mean collapses (< 30%) while median, trimmed mean and "
              "Krum hold (> 85%)", r["mean"] < 0.3 and min(r["median"], r["trimmed_mean"], r["krum"]) > 0.85)
    if ("dirichlet", "none", 0.0, "mean") in results:
        r = {a: results["dirichlet", "none", 0.0, a][0] for a in AGGREGATORS}
        check("Dirichlet(0.5), no attack: median, Krum lose accuracy against the mean "
              "(they discard honest but unusual clients)", r["median"] < r["mean"] and r["krum"] < r["mean"])
    if ("iid", "backdoor", 0.1, "mean") in results:
        boosted = {a: results["iid", "backdoor", 0.1, a][1] for a in AGGREGATORS}
        check("IID, boosted backdoor at 10%: norm clipping blunts it (success rate below the mean's)",
              boosted["norm_clip"] < boosted["mean"])
    if ("iid", "backdoor (no boost)", 0.2, "mean") in results:
        small = {a: results["iid", "backdoor (no boost)", 0.2, a][1] for a in AGGREGATORS}
        check("IID, unboosted backdoor at 20%: it slips through norm clipping (success > 50%) "
              "where the median stops it (< 10%)", small["norm_clip"] > 0.5 and small["median"] < 0.1)


if __name__ == "__main__":
    main()
