"""DP-FedAvg's privacy-utility table, and secure aggregation's exactness and cost.

Part 1: final test accuracy and epsilon (delta 1e-5) after ``--rounds`` rounds of DP-FedAvg
(logistic regression, IID, client_fraction 0.1, B=10, lr 0.1, clip_norm 0.5) for each noise
multiplier and number of clients, beside FedAvg without privacy. Epsilon comes from
dp-accounting's RDP accountant for what Simulation does: a fixed number of clients sampled
without replacement each round (replace-one neighbours, sensitivity 2 * clip_norm). The
Poisson-sampling figure (add/remove neighbours, what Opacus reports) is printed beside it
for comparison only.

Part 2: secure aggregation on a real round (2NN, 10 and 50 clients): the largest difference
from the plain weighted mean, the time the simulated protocol takes, and the cost model's bytes
per client beside FedAvg's.

Usage::

    export FEDLAB_DATA_DIR=/work/shared/data FEDLAB_OFFLINE=1
    python bench/privacy.py            # ~1 minute
"""

from __future__ import annotations

import argparse
import time

import dp_accounting as dpa
import torch
from dp_accounting import rdp

from fedlab_widgets import Simulation, algorithms, load_mnist, partition
from fedlab_widgets.experiments import format_table, privacy_utility
from fedlab_widgets.secagg import cost_model


def poisson_epsilon(z, rounds, q, delta):
    acc = rdp.RdpAccountant(list(range(2, 257)))
    acc.compose(dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(z)), rounds)
    return acc.get_epsilon(delta)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--noise", type=float, nargs="+", default=[0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 4.0, 8.0])
    ap.add_argument("--clients", type=int, nargs="+", default=[100, 1000, 6000])
    args = ap.parse_args(argv)
    train, test = load_mnist()

    print(f"Part 1: DP-FedAvg, logreg, IID, C=0.1, B=10, lr 0.1, clip_norm 0.5, {args.rounds} rounds, "
          "delta 1e-5")
    rows = privacy_utility(train, test, noise_multipliers=args.noise, num_clients=args.clients,
                           client_fraction=0.1, clip_norm=0.5, rounds=args.rounds, model="logreg",
                           batch_size=10, lr=0.1)
    table = {}
    for r in rows:
        table.setdefault(r["noise_multiplier"], {})[r["num_clients"]] = r
    out = []
    for z, by_k in table.items():
        row = {"z": "none" if z is None else z,
               "epsilon (fixed-size, ours)": by_k[args.clients[0]]["epsilon"],
               "epsilon if Poisson (not ours)": float("inf") if z is None else
               poisson_epsilon(z, args.rounds, 0.1, 1e-5)}
        for k in args.clients:
            row[f"acc K={k} (m={by_k[k]['clients_per_round']})"] = by_k[k]["final_accuracy"]
        out.append(row)
    print(format_table(out, floatfmt=".3g"), flush=True)

    print("\nPart 2: secure aggregation, 2NN, one round (E=1, B=50, lr 0.1), K=100")
    parts = partition(train, "quantity", 100, sigma=1.0, seed=0)
    out = []
    for m in (10, 50):
        res = {}
        for sa in (False, True):
            sim = Simulation("2nn", train, test, parts, client_fraction=m / 100, batch_size=50,
                             lr=0.1, seed=0, eval_every=10,
                             algorithm=algorithms.get("fedavg", secure_aggregation=sa))
            t0 = time.perf_counter()
            sim.run(1)
            res[sa] = (torch.cat([p.detach().flatten() for p in sim.global_model.parameters()]),
                       time.perf_counter() - t0, sim)
        view = res[True][2].server_state["secagg"]
        c = cost_model(199_210, m)
        out.append({"clients per round": m,
                    "max |difference|": float((res[True][0] - res[False][0]).abs().max()),
                    "resolution 1/scale": 1 / view.scale,
                    "round s (plain)": res[False][1], "round s (secure)": res[True][1],
                    "up kB FedAvg": c["fedavg_up"] / 1e3, "up kB secure": c["secagg_up"] / 1e3,
                    "down kB secure": c["secagg_down"] / 1e3})
    print(format_table(out, floatfmt=".3g"))


if __name__ == "__main__":
    main()
