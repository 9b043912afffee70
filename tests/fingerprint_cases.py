"""Small seeded runs whose results must stay bitwise the same while the package is reshaped.

Each case is a short run (a few clients, two or three rounds, on the first 6,000 training
and 1,000 test images) of one algorithm, aggregator, attack, system effect or compressor on
one engine. Its fingerprint is the SHA-256 of everything the run produced that a user can
see: the final global model's bytes and every round's numbers (accuracy, losses, update
norm, epsilon, attack success, per-client accuracy, who was sampled, dropped, straggled,
bytes). ``tests/fingerprints.json`` holds the fingerprints of the main branch before the
"one spine" refactor (issue 20); ``tests/test_fingerprints.py`` checks them.

Float kernels differ between CPUs (AVX-512 and AVX2 builds of the same matmul round
differently), so the fingerprints are kept per kind of CPU: ``fingerprints.json`` for the
machine main was first measured on, ``fingerprints-<cpu>.json`` for others, each computed
from the same commit of main. Regenerate (only when a change of results is intended and
explained in its commit) on every kind of machine you have::

    .venv/bin/python tests/fingerprint_cases.py --write            # this CPU's file
    .venv/bin/python tests/fingerprint_cases.py --write --default  # fingerprints.json
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
DEFAULT_STORE = HERE / "fingerprints.json"


def cpu_kind() -> str:
    """This machine's CPU, as far as float rounding goes: vendor and vector extension."""
    vendor = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("vendor_id"):
                vendor = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{vendor}-{torch.backends.cpu.get_cpu_capability()}".replace(" ", "_")


def store_path() -> Path:
    """This CPU's fingerprints if kept, else those of the machine main was measured on."""
    own = HERE / f"fingerprints-{cpu_kind()}.json"
    return own if own.exists() else DEFAULT_STORE


STORE = store_path()

ENGINES = ("sequential", "vectorized")
# (case name, Simulation keywords, algorithms.get(...) arguments, attack, compression)
ALGORITHMS = ["fedavg", "fedprox", "scaffold", "fednova", "fedavgm", "fedadam", "fedyogi",
              "fedadagrad", "dp-fedavg", "fedper"]


def cases() -> dict[str, dict]:
    """Case name -> {"model", "sim": Simulation keywords, "alg": (name, kwargs), "attack",
    "compression", "scheme"}."""
    out: dict[str, dict] = {}

    def add(name, *, model="2nn", sim=None, alg=("fedavg", {}), attack=None, comp=None,
            scheme=("dirichlet", {"alpha": 0.5}), engines=ENGINES, rounds=2):
        for e in engines:
            out[f"{name}@{e}"] = dict(model=model, sim={**(sim or {}), "engine": e}, alg=alg,
                                      attack=attack, comp=comp, scheme=scheme, rounds=rounds)

    for a in ALGORITHMS:
        add(a, alg=(a, {}), sim={"local_test_fraction": 0.2} if a == "fedper" else None)
    add("fedprox-mu1", alg=("fedprox", {"mu": 1.0}))
    for agg in ("median", "trimmed_mean", "krum", "multikrum", "norm_clip"):
        add(f"agg-{agg}", alg=("fedavg", {"aggregator": agg}))
    add("fedprox+dp", alg=("fedprox", {"differential_privacy": True, "clip_norm": 0.5}))
    add("secagg", alg=("fedavg", {"secure_aggregation": True}))
    add("secagg-dropout", alg=("fedavg", {"secure_aggregation": True, "secagg_dropout": 0.3}))
    add("dp+secagg", alg=("dp-fedavg", {"secure_aggregation": True}))
    for attack in (("label_flip", {"fraction": 0.3}), ("sign_flip", {"fraction": 0.3}),
                   ("gaussian", {"fraction": 0.3}), ("backdoor", {"fraction": 0.3})):
        add(f"attack-{attack[0]}", attack=attack)
    add("attack-sign_flip+median", attack=("sign_flip", {"fraction": 0.3}),
        alg=("fedavg", {"aggregator": "median"}))
    add("dropout", sim={"dropout": 0.3})
    add("stragglers-drop", sim={"stragglers": 0.5})
    add("stragglers-partial", sim={"stragglers": 0.5, "straggler_mode": "partial"},
        alg=("fedprox", {}))
    add("fednova-stragglers", sim={"stragglers": 0.5}, alg=("fednova", {}))
    for comp in (("topk", {"fraction": 0.05}), ("randk", {"fraction": 0.1}),
                 ("quantize", {"bits": 4})):
        add(f"compression-{comp[0]}", comp=comp, rounds=3)
    add("local-test", sim={"local_test_fraction": 0.2})
    add("eval-subset", sim={"eval_every": 2, "eval_subset": 300}, rounds=3)
    add("full-batch-E2", sim={"batch_size": None, "local_epochs": 2})
    add("logreg", model="logreg")
    add("small_cnn", model="small_cnn")
    add("cnn", model="cnn", sim={"client_fraction": 0.15}, engines=("vectorized",))
    add("shards", scheme=("shards", {}))
    add("iid-C1", scheme=("iid", {}), sim={"client_fraction": 1.0})
    return out


def subset(n_train: int = 6000, n_test: int = 1000):
    from fedlab_widgets import load_mnist

    train, test = load_mnist()
    return (dataclasses.replace(train, images=train.images[:n_train].contiguous(),
                                labels=train.labels[:n_train].clone()),
            dataclasses.replace(test, images=test.images[:n_test].contiguous(),
                                labels=test.labels[:n_test].clone()))


def run_case(case: dict, train, test):
    from fedlab_widgets import Simulation, algorithms, attacks, compression, partition

    scheme, sparams = case["scheme"]
    parts = partition(train.labels, scheme, 20, seed=3, **sparams)
    name, akw = case["alg"]
    kw = dict(client_fraction=0.25, local_epochs=1, batch_size=20, lr=0.05, seed=7,
              num_threads=1)
    kw.update(case["sim"])
    if case["attack"] is not None:
        kw["attack"] = attacks.get(case["attack"][0], **case["attack"][1])
    if case["comp"] is not None:
        kw["compression"] = compression.get(case["comp"][0], **case["comp"][1])
    sim = Simulation(case["model"], train, test, parts, algorithm=algorithms.get(name, **akw), **kw)
    sim.run(case["rounds"])
    return sim


def _floats(values) -> bytes:
    return b"".join(struct.pack("<d", float(v)) for v in values)


def fingerprint(sim) -> str:
    """SHA-256 of the global model's bytes and every round's visible numbers."""
    h = hashlib.sha256()
    for p in sim.global_model.state_dict().values():
        h.update(p.detach().contiguous().cpu().numpy().tobytes())
    for r in sim.history.records:
        h.update(_floats([r.round, r.accuracy, r.loss, r.train_loss, r.update_norm, r.epsilon,
                          r.attack_success, r.bytes_down, r.bytes_up, r.samples, r.attackers,
                          r.reported, r.eval_size]))
        h.update(_floats(r.client_accuracy))
        h.update(json.dumps([r.clients, r.dropped, r.stragglers, r.note]).encode())
    return h.hexdigest()


def compute(names=None) -> dict[str, str]:
    train, test = subset()
    all_cases = cases()
    out = {}
    for name in (names or all_cases):
        out[name] = fingerprint(run_case(all_cases[name], train, test))
    return out


if __name__ == "__main__":
    torch.use_deterministic_algorithms(False)
    prints = compute()
    if "--write" in sys.argv:
        path = DEFAULT_STORE if "--default" in sys.argv else HERE / f"fingerprints-{cpu_kind()}.json"
        path.write_text(json.dumps(prints, indent=1, sort_keys=True) + "\n")
        print(f"wrote {len(prints)} fingerprints to {path}")
    else:
        stored = json.loads(STORE.read_text()) if STORE.exists() else {}
        bad = [k for k, v in prints.items() if stored.get(k) != v]
        print(f"{len(prints) - len(bad)} of {len(prints)} fingerprints match; differ: {bad}")
