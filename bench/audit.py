"""What DP buys, measured: membership inference, the canary audit and local against central DP.

Part 1: the loss attack (Yeom et al. 2018) and its reference-calibrated form (Watson et al.
2022) against a federation that memorises (10 clients of 30 digits, 20 local epochs, 10 rounds,
2NN), at example and client level, then under DP-FedAvg (clip 0.5) at z = 0.3 and 1: AUC, TPR at
1% FPR, and the epsilon the calibrated attack proves (Clopper-Pearson, 95%).

Part 2: canary clients (Andrew et al., ICLR 2024): 100 canaries beside 10 real clients, all in
every round for 10 rounds, DP-FedAvg at z = 1, 2, 4, over ``--seeds`` seeds: the audit's lower
bound beside the accountant's epsilon, and the canaries' AUC.

Part 3: local DP (each client noises its own update, Flower's LocalDpMod) against central DP at
the same epsilon, 100 and 1,000 clients, 10% per round, 10 rounds of logistic regression.

Usage::

    export FEDLAB_DATA_DIR=/work/shared/data FEDLAB_OFFLINE=1
    python bench/audit.py               # ~2 minutes with 3 seeds
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from fedlab_widgets import Simulation, algorithms, load_mnist, partition
from fedlab_widgets.algorithms.privacy import noise_for_epsilon
from fedlab_widgets.audit import CanaryClients, canary_audit, membership_inference, with_canaries
from fedlab_widgets.experiments import format_table


def attacks(train, test):
    digits = train.subset(torch.arange(900))
    members, outsiders = torch.arange(300), torch.arange(600, 900)
    settings = dict(client_fraction=1.0, local_epochs=20, batch_size=10, lr=0.1, eval_every=10)

    def federation(ix, seed, alg=None):
        data = digits.subset(ix)
        sim = Simulation("2nn", data, test, partition(data.labels, "iid", 10, seed=seed), seed=seed,
                         algorithm=alg or algorithms.get("fedavg"), **settings)
        sim.run(10)
        return sim

    reference = federation(torch.arange(300, 600), 1).global_model
    outside = [ix + 600 for ix in partition(digits.labels[600:], "iid", 10, seed=0).client_indices]
    rows = []
    for z in (None, 0.3, 1.0):
        alg = None if z is None else algorithms.get("dp-fedavg", clip_norm=0.5, noise_multiplier=z)
        sim = federation(members, 0, alg)
        loss = membership_inference(sim.global_model, members, outsiders, dataset=digits)
        cal = membership_inference(sim.global_model, members, outsiders, dataset=digits,
                                   attack="calibrated", reference=reference)
        client = membership_inference(sim.global_model, sim.partition.client_indices, outside,
                                      dataset=digits, level="client")
        rows.append({"noise z": "none" if z is None else z,
                     "epsilon": float("inf") if z is None else sim.history.epsilon[-1],
                     "accuracy": sim.history.final_accuracy, "loss AUC": loss.auc,
                     "TPR@1%": loss.tpr_at(0.01), "calibrated AUC": cal.auc, "client AUC": client.auc,
                     "eps proven": cal.epsilon_lower_bound(delta=1e-5)})
    return rows


def canaries(train, test, seeds):
    six = train.subset(torch.arange(3100))
    rows = []
    for z in (1.0, 2.0, 4.0):
        lower, auc = [], []
        for seed in seeds:
            c = CanaryClients(range(10, 110), norm=0.5, seed=seed)
            real = partition(six.labels[:3000], "iid", 10, seed=seed)
            parts = with_canaries(real, six.labels, 100, first=3000)
            alg = algorithms.get("dp-fedavg", clip_norm=0.5, noise_multiplier=z, client_steps=[c])
            sim = Simulation("2nn", six, test, parts, client_fraction=1.0, batch_size=None, lr=0.5,
                             seed=seed, eval_every=10, algorithm=alg)
            start = sim.layout.flatten(list(sim.global_model.parameters())).clone()
            sim.run(10)
            r = canary_audit(sim, c, start)
            lower.append(r.epsilon_lower_bound(delta=1e-5))
            auc.append(r.auc)
        rows.append({"noise z": z, "epsilon (accountant)": sim.history.epsilon[-1],
                     "lower bound (median)": float(np.median(lower)), "lower (min-max)":
                     f"{min(lower):.2f}-{max(lower):.2f}", "canary AUC (median)": float(np.median(auc))})
    return rows


def local_central(train, test):
    rows = []
    for K in (100, 1000):
        m, rounds = K // 10, 10
        parts = partition(train, "iid", K, seed=0)
        central = algorithms.get("dp-fedavg", clip_norm=0.5, noise_multiplier=1.0)
        eps = central.epsilon(rounds, K, m)
        z = noise_for_epsilon(eps, rounds=rounds, num_clients=K, clients_per_round=m, local_dp=True)
        local = algorithms.get("dp-fedavg", clip_norm=0.5, noise_multiplier=z, local_dp=True)
        row = {"clients K": K, "epsilon": eps, "z central": 1.0, "z local": z}
        for name, alg in (("central", central), ("local", local)):
            h = Simulation("logreg", train, test, parts, client_fraction=0.1, batch_size=10, lr=0.1, seed=0,
                           eval_every=rounds, algorithm=alg).run(rounds)
            row[f"accuracy {name}"] = h.final_accuracy
        rows.append(row)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=3, help="seeds of the canary audit")
    args = ap.parse_args(argv)
    train, test = load_mnist()
    small_test = test.subset(torch.arange(2000))
    for title, fn in (("membership inference (2000 test digits for accuracy)", lambda: attacks(train, small_test)),
                      (f"canary audit, {args.seeds} seeds", lambda: canaries(train, small_test, range(args.seeds))),
                      ("local against central DP at equal epsilon (full test set)", lambda: local_central(train, test))):
        t = time.perf_counter()
        rows = fn()
        print(f"\n## {title}  ({time.perf_counter() - t:.0f} s)\n")
        print(format_table(rows, floatfmt=".3g"))


if __name__ == "__main__":
    main()
