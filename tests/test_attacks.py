"""Attacks against references: an all-malicious run equals honest training on the
attacked data or a transformed update, both engines agree, and the attacks do what the
literature says to the mean and not to the robust aggregators."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from fedlab_widgets import Simulation, algorithms, attacks, get_model, partition
from fedlab_widgets.algorithms import RoundContext
from fedlab_widgets.attacks import stamp_trigger
from fedlab_widgets.engines import ClientUpdates


def _x(sim):
    return sim.layout.flatten(sim.global_model.parameters())


KW = dict(client_fraction=0.1, batch_size=10, lr=0.05, seed=3, eval_every=1000)


@pytest.mark.parametrize("name", attacks.NAMES)
@pytest.mark.parametrize("aggregator", ["mean", "median"])
def test_engines_agree_float64_under_attack(small64, name, aggregator):
    train, test = small64
    parts = partition(train.labels, "quantity", 100, sigma=1.0, seed=1)
    res = []
    for engine in ("sequential", "vectorized"):
        sim = Simulation(get_model("2nn", seed=0).double(), train, test, parts, engine=engine,
                         attack=attacks.get(name, fraction=0.3),
                         algorithm=algorithms.get("fedavg", aggregator=aggregator), **KW)
        h = sim.run(3)
        res.append((_x(sim), h))
    torch.testing.assert_close(res[1][0], res[0][0], rtol=1e-10, atol=1e-12)
    assert [r.attackers for r in res[0][1].records] == [r.attackers for r in res[1][1].records]
    assert sum(r.attackers for r in res[0][1].records) > 0     # the attack did take part


@pytest.mark.parametrize("model,kw", [("small_cnn", dict(batch_size=10)), ("cnn", dict(batch_size=50))])
def test_data_attacks_on_the_convolutional_paths(small64, model, kw):
    train, test = small64
    parts = partition(train.labels, "iid", 100, seed=1)
    res = []
    for engine in ("sequential", "vectorized"):
        sim = Simulation(get_model(model, seed=0).double(), train, test, parts, engine=engine,
                         client_fraction=0.03, lr=0.05, seed=3, eval_every=1000,
                         attack=attacks.get("backdoor", fraction=0.5), **kw)
        sim.run(1)
        res.append(_x(sim))
    torch.testing.assert_close(res[1], res[0], rtol=1e-10, atol=1e-12)


# -- every client malicious: the attack is exactly honest training on attacked data ---------------
def _honest_on(train, test, parts, dataset_change, **kw):
    data = dataclasses.replace(train, **dataset_change)
    p = dataclasses.replace(parts, labels=data.labels)
    sim = Simulation("2nn", data, test, p, **kw)
    sim.run(2)
    return _x(sim)


def test_label_flip_is_training_on_flipped_labels(train, test_set):
    parts = partition(train.labels, "iid", 50, seed=0)
    kw = dict(client_fraction=0.1, batch_size=20, lr=0.05, seed=0, eval_every=100)
    sim = Simulation("2nn", train, test_set, parts, attack=attacks.get("label_flip", fraction=1.0), **kw)
    sim.run(2)
    ref = _honest_on(train, test_set, parts, {"labels": 9 - train.labels}, **kw)
    torch.testing.assert_close(_x(sim), ref, rtol=0, atol=0)
    mapping = [1, 0, 2, 3, 4, 5, 6, 7, 8, 9]                       # swap 0 and 1 only
    sim = Simulation("2nn", train, test_set, parts,
                     attack=attacks.get("label_flip", fraction=1.0, mapping=mapping), **kw)
    sim.run(2)
    ref = _honest_on(train, test_set, parts, {"labels": torch.tensor(mapping)[train.labels]}, **kw)
    torch.testing.assert_close(_x(sim), ref, rtol=0, atol=0)


def test_backdoor_poisons_and_boosts(train, test_set):
    parts = partition(train.labels, "iid", 50, seed=0)
    kw = dict(client_fraction=0.1, batch_size=20, lr=0.05, seed=0, eval_every=100)
    attack = attacks.get("backdoor", fraction=1.0, share=1.0, target=7, boost=1.0)
    sim = Simulation("2nn", train, test_set, parts, attack=attack, **kw)
    sim.run(2)
    stamped = stamp_trigger(train.images, float(train.images.max()), float(train.images.min()))
    ref = _honest_on(train, test_set, parts, {"images": stamped,
                                              "labels": torch.full_like(train.labels, 7)}, **kw)
    torch.testing.assert_close(_x(sim), ref, rtol=0, atol=0)
    assert sim.history.attack_success[-1] > 0.9       # everything it learned is "7"
    # boost scales what it sends: one round from the same start, boost 3 vs 1
    steps = {}
    for boost in (1.0, 3.0):
        s = Simulation("2nn", train, test_set, parts, **kw,
                       attack=attacks.get("backdoor", fraction=1.0, share=1.0, target=7, boost=boost))
        x0 = _x(s)
        s.run(1)
        steps[boost] = _x(s) - x0
    torch.testing.assert_close(steps[3.0], 3 * steps[1.0], rtol=1e-4, atol=1e-6)


def test_sign_flip_sends_minus_scale_times_the_update(train, test_set):
    parts = partition(train.labels, "iid", 50, seed=0)
    kw = dict(client_fraction=0.1, batch_size=20, lr=0.05, seed=0, eval_every=100)
    steps = {}
    for attack in (None, attacks.get("sign_flip", fraction=1.0, scale=2.5)):
        s = Simulation("2nn", train, test_set, parts, attack=attack, **kw)
        x0 = _x(s)
        s.run(1)
        steps[attack is None] = _x(s) - x0
    torch.testing.assert_close(steps[False], -2.5 * steps[True], rtol=1e-4, atol=1e-7)


def test_gaussian_noise_has_the_honest_scale_and_is_seeded():
    g = torch.Generator().manual_seed(0)
    delta = torch.randn(6, 5000, generator=g) * 0.01
    u = ClientUpdates([0, 1, 2, 3, 4, 5], delta, torch.ones(6, dtype=torch.float64),
                      torch.ones(6, dtype=torch.int64), torch.zeros(6, dtype=torch.float64))
    ctx = RoundContext(round=4, x=torch.zeros(5000), lr=0.1, num_clients=6, total_samples=6, seed=9)
    att = attacks.get("gaussian", fraction=0.5, scale=3.0)
    out = att.client_step(u, ctx, malicious={1, 4})
    honest = delta[[0, 2, 3, 5]]
    rms = float(honest.pow(2).mean().sqrt())
    for i in (1, 4):
        assert abs(float(out.delta[i].std()) / (3.0 * rms) - 1) < 0.05
    assert torch.equal(out.delta[[0, 2, 3, 5]], honest) and torch.equal(u.delta, delta)
    assert torch.equal(att.client_step(u, ctx, malicious={1, 4}).delta, out.delta)   # seeded


def test_malicious_clients_are_chosen_once_from_the_seed(train, test_set):
    parts = partition(train.labels, "iid", 50, seed=0)
    make = lambda seed: Simulation("2nn", train, test_set, parts, seed=seed, eval_every=100,  # noqa: E731
                                   client_fraction=0.2, attack=attacks.get("sign_flip", fraction=0.3))
    a, b, c = make(1), make(1), make(2)
    assert a.malicious == b.malicious and len(a.malicious) == 15 and a.malicious != c.malicious
    h = a.run(3)
    assert [r.attackers for r in h.records] == [len(set(r.clients) & a.malicious) for r in h.records]
    assert h.config["attack"] == "sign_flip" and h.config["malicious_clients"] == sorted(a.malicious)
    assert h.label.endswith("sign_flip 30%")


def test_trigger_and_success_rate(test_set):
    x = torch.zeros(2, 1, 28, 28)
    s = stamp_trigger(x, 1.0, -1.0)
    assert torch.equal(s[0, 0, 23:27, 23:27], torch.tensor([[1., -1, 1, -1], [-1, 1, -1, 1],
                                                            [1, -1, 1, -1], [-1, 1, -1, 1]]))
    assert s[..., :23, :].abs().sum() == 0 and torch.equal(x, torch.zeros_like(x))

    class Always(torch.nn.Module):
        def __init__(self, k):
            super().__init__()
            self.k = k

        def forward(self, x):
            return torch.nn.functional.one_hot(torch.full((len(x),), self.k), 10).float()

    att = attacks.get("backdoor", target=3)
    assert att.success_rate(Always(3), test_set) == 1.0
    assert att.success_rate(Always(4), test_set) == 0.0
    assert np.isnan(attacks.get("sign_flip").success_rate(Always(3), test_set))


def test_defences_hold_where_the_mean_breaks(train, test_set):
    """Sign flipping at 20% collapses FedAvg's mean; median and Krum hold (IID, 15 rounds)."""
    parts = partition(train.labels, "iid", 100, seed=0)
    kw = dict(client_fraction=0.2, batch_size=50, lr=0.05, seed=0, eval_every=15,
              attack=attacks.get("sign_flip", fraction=0.2))
    acc = {agg: Simulation("2nn", train, test_set, parts, **kw, algorithm=algorithms.get(
        "fedavg", aggregator=agg, **({"num_byzantine": 4} if agg == "krum" else {}))).run(15)
        .final_accuracy for agg in ("mean", "median", "krum")}
    assert acc["mean"] < 0.3 and acc["median"] > 0.85 and acc["krum"] > 0.85, acc


@pytest.mark.parametrize("call,match", [
    (lambda: attacks.get("poison"), r"attack must be one of label_flip, sign_flip, gaussian, backdoor"),
    (lambda: attacks.get("sign_flip", fraction=-0.1), r"fraction must be a number from 0 to 1"),
    (lambda: attacks.get("sign_flip", scale=0), r"scale must be a number in \(0, 1000\]"),
    (lambda: attacks.get("backdoor", target=10), r"target must be an integer from 0 to 9"),
    (lambda: attacks.get("label_flip", scale=2), r"unknown parameter\(s\) scale for attack 'label_flip'"),
    (lambda: attacks.get("sign_flip", mapping=[1, 0]), r"mapping applies to label_flip only"),
    (lambda: attacks.get("label_flip", mapping=[0.5, 1]), r"mapping must list"),
    (lambda: attacks.get("label_flip", mapping=[3, 0, 1]), r"mapping must list"),
])
def test_bad_attack_settings(call, match):
    with pytest.raises(ValueError, match=match):
        call()
