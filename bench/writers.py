"""MNIST's real writers against IID and shards, and the participation gap, over seeds.

The settings of notebook 02b (2NN, K = 539, C = 0.1, E = 1, B = 10, lr = 0.1, 20 rounds,
20% of each client's digits held out), on ``--seeds`` seeds: accuracy after 20 rounds,
rounds to 90%, the four-rotation writers' accuracy on the turned test sets, and the
participation gap with its per-series means. Prints one table and writes two figures.

    FEDLAB_DATA_DIR=/path/to/data python bench/writers.py --plot bench/figures/writers
"""

from __future__ import annotations

import argparse
import statistics

from fedlab_widgets import Simulation, evaluate, load_mnist, partition
from fedlab_widgets.experiments import format_table
from fedlab_widgets.features import rotated, skew_features
from fedlab_widgets.generalisation import participation_gap

SETTINGS = dict(client_fraction=0.1, local_epochs=1, batch_size=10, lr=0.1, local_test_fraction=0.2)


def one_seed(train, test, seed: int, rounds: int) -> dict:
    parts = {"writers": partition(train, "writer", seed=seed),
             "iid": partition(train, "iid", 539, seed=seed),
             "shards": partition(train, "shards", 539, seed=seed)}
    out = {"histories": {}}
    for name, p in parts.items():
        sim = Simulation("2nn", train, test, p, seed=seed, **SETTINGS)
        out["histories"][name] = sim.run(rounds)
        if name == "writers":
            out["gap"] = participation_gap(sim)
    turned = skew_features(train, parts["writers"], rotation="four", seed=seed)
    sim = Simulation("2nn", turned, test, parts["writers"], seed=seed,
                     **{**SETTINGS, "local_test_fraction": 0.0})
    sim.run(rounds)
    out["rotated"] = statistics.mean(evaluate(sim.global_model, rotated(test, a))[0]
                                     for a in (0, 90, 180, 270))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--plot", default=None, help="write <PLOT>-convergence.png and <PLOT>-gap.png")
    args = ap.parse_args()
    train, test = load_mnist()
    rows, runs = [], []
    for seed in range(args.seeds):
        r = one_seed(train, test, seed, args.rounds)
        runs.append(r)
        h, s = r["histories"], r["gap"].summary()
        rows.append({"seed": seed, **{f"{n} acc": h[n].final_accuracy for n in h},
                     **{f"{n} to 90%": h[n].rounds_to(0.9) or "-" for n in h},
                     "rotated acc": r["rotated"], "participation gap": r["gap"].gap,
                     "new-people gap": r["gap"].new_gap,
                     "employees - students (took part)": s["took_part"]["by_series"]["Census employees"]
                     - s["took_part"]["by_series"]["high-school students"]})
        print(f"seed {seed}:\n{r['gap'].table()}\n", flush=True)
    print(format_table(rows, floatfmt=".3f"))
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from fedlab_widgets.plots import plot_convergence
        fig, ax = plt.subplots(figsize=(6.4, 4))
        plot_convergence(runs[0]["histories"], ax=ax)
        ax.set_title("2NN, K=539, C=0.1, E=1, B=10, seed 0: writers vs IID vs shards")
        fig.tight_layout()
        fig.savefig(f"{args.plot}-convergence.png", dpi=110)
        fig = runs[0]["gap"].plot()
        fig.tight_layout()
        fig.savefig(f"{args.plot}-gap.png", dpi=110)
        print(f"wrote {args.plot}-convergence.png and {args.plot}-gap.png")


if __name__ == "__main__":
    main()
