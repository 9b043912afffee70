"""The Flower Deployment Engine against the kit's engine on the same job: where the time goes.

2NN, K = 10 IID clients, C = 1, E = 1, B = 10, lr 0.1 (issue 11's job): the kit's simulation
(vectorised engine, one thread), then the same experiment through ``fedlab_widgets.flower.run_flower``
(a SuperLink and 10 SuperNodes as real processes on the loopback interface, no Ray). Per round:
wall time, and from the ClientApps' own clocks the mean time to start the process and import
(torch, Flower, the kit), to load MNIST and rebuild the partition, and to train; the rest is
Flower's orchestration (messages, serialising the 0.8 MB model both ways, polling) and the
server's test evaluation.

Usage::

    export FEDLAB_DATA_DIR=/work/shared/data FEDLAB_OFFLINE=1
    python bench/flower_deployment.py --rounds 3          # ~2 minutes
"""

from __future__ import annotations

import argparse

import numpy as np

from fedlab_widgets import Simulation, load_mnist, partition
from fedlab_widgets.experiments import format_table
from fedlab_widgets.flower import FLOWER_VERSION, run_flower


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--model", default="2nn")
    args = ap.parse_args()
    train, test = load_mnist()
    parts = partition(train, "iid", args.clients, seed=0)

    def sim():
        return Simulation(args.model, train, test, parts, client_fraction=1.0, local_epochs=1,
                          batch_size=10, lr=0.1, seed=0)

    kit = sim().run(args.rounds)
    fl = run_flower(sim(), args.rounds)
    rows = []
    for t, r_kit, r_fl in zip(fl.config["flower_timing"], kit.records, fl.records):
        start = float(np.mean(t["process_seconds"]))
        setup = float(np.mean(t["setup_seconds"]))
        train_s = float(np.mean(t["client_seconds"]))
        rows.append({"round": t["round"], "kit s": r_kit.seconds, "Flower s": r_fl.seconds,
                     "client: start+imports": start, "client: data+partition": setup,
                     "client: training": train_s, "server eval": t["eval_seconds"],
                     "kit acc": r_kit.accuracy, "Flower acc": r_fl.accuracy})
    print(f"Flower {FLOWER_VERSION}, {args.model}, K={args.clients}, C=1, E=1, B=10; "
          f"starting the deployment took {fl.config['startup_seconds']:.1f} s")
    print(format_table(rows, floatfmt=".3f"))
    print(f"largest accuracy difference: {np.abs(fl.accuracy - kit.accuracy).max():.2e}")


if __name__ == "__main__":
    main()
