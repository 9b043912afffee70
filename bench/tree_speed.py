"""FedAvg's round on the fast engine, for two source trees of the kit, interleaved in one run.

    .venv/bin/python bench/tree_speed.py OLD_TREE NEW_TREE [--blocks 3] [--rounds 6]

Each block runs, in a fresh process per tree (the tree first on PYTHONPATH), the 2NN
(K = 100, C = 0.1, E = 1, B = 10, lr 0.1, IID, vectorized engine, one torch thread) for one
warm-up and ``--rounds`` measured rounds, and reports the median seconds per round; trees
alternate block by block so that the machine's drift hits both. Prints each tree's best
block median and the ratio. (Used for issue 20: the spine refactor must not slow FedAvg.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, statistics, sys, time
import fedlab_widgets
from fedlab_widgets import Simulation, load_mnist, partition
assert fedlab_widgets.__file__.startswith(sys.argv[1]), fedlab_widgets.__file__
train, test = load_mnist()
parts = partition(train.labels, "iid", 100, seed=0)
sim = Simulation("2nn", train, test, parts, client_fraction=0.1, local_epochs=1, batch_size=10,
                 lr=0.1, seed=0, engine="vectorized", num_threads=1)
rounds = int(sys.argv[2])
secs = []
for i, rec in enumerate(sim.rounds(rounds + 1)):
    if i:
        secs.append(rec.seconds)
print(json.dumps({"median": statistics.median(secs), "accuracy": rec.accuracy}))
"""


def one(tree: str, rounds: int) -> dict:
    env = {**os.environ, "PYTHONPATH": tree}
    out = subprocess.run([sys.executable, "-c", CHILD, tree, str(rounds)], env=env, check=True,
                         capture_output=True, text=True, cwd=tree)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trees", nargs=2, help="two source trees (folders holding fedlab_widgets/)")
    ap.add_argument("--blocks", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args(argv)
    trees = [os.path.abspath(t) for t in args.trees]
    seen: dict[str, list] = {t: [] for t in trees}
    for b in range(args.blocks):
        for t in (trees if b % 2 == 0 else trees[::-1]):
            r = one(t, args.rounds)
            seen[t].append(r)
            print(f"block {b + 1}: {t}: {r['median']:.3f} s/round (accuracy {r['accuracy']:.4f})",
                  flush=True)
    best = {t: min(r["median"] for r in seen[t]) for t in trees}
    for t in trees:
        print(f"{t}: best block median {best[t]:.3f} s/round, median of blocks "
              f"{statistics.median(r['median'] for r in seen[t]):.3f}")
    print(f"new / old = {best[trees[1]] / best[trees[0]]:.3f}")


if __name__ == "__main__":
    main()
