"""Dropouts and stragglers: who fails is seeded, survivors are aggregated, partial work is exact."""

import math

import numpy as np
import pytest
import torch

from fedlab_widgets import Simulation, algorithms, get_model, partition
from fedlab_widgets.engines import Schedule
from fedlab_widgets.systems import client_fates, truncate_schedule


def _params(sim):
    return [p.detach().clone() for p in sim.global_model.parameters()]


def test_fates_are_seeded_per_client_and_match_their_rates():
    a = client_fates(range(50), round_=3, seed=7, dropout=0.3, stragglers=0.5)
    b = client_fates(range(50), round_=3, seed=7, dropout=0.3, stragglers=0.5)
    assert a == b
    # a client's fate does not depend on who else was sampled
    c = client_fates([4, 9], round_=3, seed=7, dropout=0.3, stragglers=0.5)
    for k in (4, 9):
        assert (k in c.dropped) == (k in a.dropped) and (k in c.stragglers) == (k in a.stragglers)
    n_drop = n_strag = n_rep = 0
    for r in range(200):
        f = client_fates(range(20), round_=r, seed=0, dropout=0.3, stragglers=0.5,
                         straggler_work=(0.2, 0.6))
        n_drop += len(f.dropped)
        n_strag += len(f.stragglers)
        n_rep += 20 - len(f.dropped)
        assert all(0.2 <= f.work[k] <= 0.6 for k in f.stragglers)
    assert abs(n_drop / 4000 - 0.3) < 0.03
    assert abs(n_strag / n_rep - 0.5) < 0.03


def test_truncate_schedule_keeps_first_steps_and_weights():
    g = torch.Generator().manual_seed(0)
    s = Schedule.from_orders([2, 5], [[torch.randperm(100, generator=g)[:33]] * 2,
                                      [torch.randperm(100, generator=g)[:20]] * 2], batch_size=4)
    t = truncate_schedule(s, {5: 0.3, 2: 0.01})
    row = {k: i for i, k in enumerate(t.clients)}
    assert t.steps[row[5]] == math.ceil(0.3 * 10) and t.steps[row[2]] == 1
    assert torch.equal(t.indices[row[5]], s.indices[s.clients.index(5)][:12])
    assert t.weights.tolist() == sorted(s.weights.tolist(), reverse=True) or \
        sorted(t.weights.tolist()) == sorted(s.weights.tolist())


@pytest.mark.parametrize("bad,msg", [
    (dict(dropout=1.0), "dropout"), (dict(dropout=-0.1), "dropout"),
    (dict(stragglers=1.5), "stragglers"), (dict(stragglers="0.5"), "stragglers"),
    (dict(straggler_work=(0.0, 1.0)), "straggler_work"),
    (dict(straggler_work=(0.6, 0.2)), "straggler_work"),
    (dict(straggler_work="ab"), "straggler_work"),
    (dict(straggler_mode="wait"), "straggler_mode"),
])
def test_bad_system_settings_name_the_parameter(train, test_set, bad, msg):
    parts = partition(train.labels, "iid", 10, seed=0)
    with pytest.raises(ValueError, match=msg):
        Simulation("2nn", train, test_set, parts, **bad)


def test_dropout_aggregates_exactly_the_survivors(small64):
    train, test = small64
    parts = partition(train.labels, "iid", 20, seed=0)
    model = get_model("2nn", seed=0).double()
    sim = Simulation(model, train, test, parts, client_fraction=0.5, lr=0.1, dropout=0.4,
                     seed=2, eval_every=100)
    x0 = sim.layout.flatten(sim.global_model.parameters())
    rec = sim.run(1).records[0]
    assert rec.dropped and rec.reported == len(rec.clients) - len(rec.dropped)
    assert rec.bytes_up == rec.reported * sim.num_parameters * 4
    assert rec.bytes_down == len(rec.clients) * sim.num_parameters * 4
    # reference: FedAvg of the survivors alone
    ref = Simulation(model, train, test, parts, client_fraction=0.5, lr=0.1, seed=2,
                     engine="sequential")
    survivors = [k for k in rec.clients if k not in rec.dropped]
    u = ref.engine.train_clients(x0, ref.make_schedule(1, survivors), lr=0.1)
    expected = x0 + (u.weight[:, None] * u.delta).sum(0) / u.weight.sum()
    torch.testing.assert_close(sim.layout.flatten(sim.global_model.parameters()), expected,
                               rtol=1e-10, atol=1e-12)


def test_same_seed_same_failures_and_history(train, test_set):
    parts = partition(train.labels, "iid", 30, seed=0)
    runs = [Simulation("2nn", train, test_set, parts, client_fraction=0.3, dropout=0.3,
                       stragglers=0.5, seed=4, eval_every=100).run(3) for _ in range(2)]
    assert [r.dropped for r in runs[0].records] == [r.dropped for r in runs[1].records]
    assert [r.stragglers for r in runs[0].records] == [r.stragglers for r in runs[1].records]
    np.testing.assert_array_equal(runs[0].train_loss, runs[1].train_loss)
    assert any(r.dropped for r in runs[0].records) and any(r.stragglers for r in runs[0].records)


def test_a_round_nobody_reports_keeps_the_model(train, test_set):
    parts = partition(train.labels, "iid", 10, seed=0)
    sim = Simulation("2nn", train, test_set, parts, client_fraction=0.1, dropout=0.95, seed=0)
    before = _params(sim)
    h = sim.run(3)
    empty = [r for r in h.records if r.reported == 0]
    assert empty, "with dropout 0.95 and one client per round some round must be empty"
    assert all(r.note == "no client reported" and r.bytes_up == 0 for r in empty)
    assert not h.diverged and len(h) == 3
    if len(empty) == 3:
        for a, b in zip(before, _params(sim)):
            assert torch.equal(a, b)


def test_too_few_survivors_for_krum_skip_the_round(train, test_set):
    parts = partition(train.labels, "iid", 20, seed=0)
    sim = Simulation("2nn", train, test_set, parts, client_fraction=0.25, dropout=0.5, seed=1,
                     algorithm=algorithms.get("fedavg", aggregator="krum", num_byzantine=1),
                     eval_every=100)
    h = sim.run(6)
    skipped = [r for r in h.records if r.reported == 0 and len(r.dropped) < len(r.clients)]
    assert skipped and all("too few clients" in r.note and "krum" in r.note for r in skipped)
    assert all(len(r.clients) - len(r.dropped) < 5 for r in skipped)
    assert not h.diverged and len(h) == 6


def test_straggler_modes(small64):
    train, test = small64
    parts = partition(train.labels, "iid", 20, seed=0)
    kw = dict(client_fraction=0.5, local_epochs=2, batch_size=10, lr=0.05, stragglers=0.6,
              straggler_work=(0.2, 0.5), seed=5, eval_every=100)
    model = get_model("2nn", seed=0).double()
    assert Simulation(model, train, test, parts, **kw).straggler_mode == "drop"
    assert Simulation(model, train, test, parts, algorithm="fedprox", **kw).straggler_mode \
        == "partial"
    drop = Simulation(model, train, test, parts, straggler_mode="drop", **kw)
    rec = drop.run(1).records[0]
    assert rec.stragglers and rec.reported == len(rec.clients) - len(rec.stragglers)
    part = Simulation(model, train, test, parts, straggler_mode="partial", engine="sequential",
                      **kw)
    x0 = part.layout.flatten(part.global_model.parameters())
    rec = part.run(1).records[0]
    assert rec.reported == len(rec.clients)
    full = sum(len(part.partition.client_indices[k]) for k in rec.clients) * 2
    assert rec.samples < full  # stragglers processed fewer samples
    # reference: stragglers train their first ceil(work * steps) minibatches, weights unchanged
    fates = client_fates(rec.clients, round_=1, seed=5, stragglers=0.6, straggler_work=(0.2, 0.5))
    sched = part.make_schedule(1, rec.clients)
    steps = dict(zip(sched.clients, sched.steps.tolist()))
    u = part.engine.train_clients(x0, truncate_schedule(sched, fates.work), lr=0.05)
    for k, s in zip(u.clients, u.steps.tolist()):
        assert s == (math.ceil(fates.work[k] * steps[k]) if k in fates.work else steps[k])
    expected = x0 + (u.weight[:, None] * u.delta).sum(0) / u.weight.sum()
    torch.testing.assert_close(part.layout.flatten(part.global_model.parameters()), expected,
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["fedavg", "fedprox", "fednova"])
def test_engines_agree_with_stragglers_and_dropouts(small64, name):
    train, test = small64
    parts = partition(train.labels, "quantity", 40, seed=1, sigma=1.0)
    res = []
    for engine in ("sequential", "vectorized"):
        sim = Simulation(get_model("2nn", seed=0).double(), train, test, parts,
                         client_fraction=0.25, local_epochs=2, batch_size=10, lr=0.05,
                         algorithm=algorithms.get(name, **({"mu": 0.5} if name == "fedprox" else {})),
                         dropout=0.2, stragglers=0.5, straggler_mode="partial", seed=3,
                         engine=engine, eval_every=100)
        sim.run(2)
        res.append(_params(sim))
    for a, b in zip(*res):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
