"""Per-client views: local test sets, per-client accuracy, fine-tuning and FedPer."""

import numpy as np
import pytest
import torch

from fedlab_widgets import History, Simulation, get_model, partition
from fedlab_widgets.engines import FlatLayout, Schedule, get_engine
from fedlab_widgets.personalisation import client_accuracy, finetune, split_local_test, spread


def test_split_local_test_is_a_seeded_disjoint_split(train):
    parts = partition(train.labels, "quantity", 50, seed=0, sigma=1.0)
    tr, te = split_local_test(parts, 0.2, seed=3)
    tr2, te2 = split_local_test(parts, 0.2, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(te, te2))
    for k in range(50):
        a, b = set(tr.client_indices[k].tolist()), set(te[k].tolist())
        assert not a & b and a | b == set(parts.client_indices[k].tolist())
        n = len(parts.client_indices[k])
        assert len(b) == min(n - 1, max(1, round(0.2 * n)))
    assert tr.scheme == "quantity" and tr.num_clients == 50
    for bad in (0, 1, 1.5, "0.2", True):
        with pytest.raises(ValueError, match="local_test_fraction"):
            split_local_test(parts, bad)


def test_client_accuracy_matches_a_loop(train):
    parts = partition(train.labels[:3000], "dirichlet", 10, seed=0, alpha=0.3)
    _, te = split_local_test(parts, 0.3, seed=0)
    model = get_model("2nn", seed=1)
    acc = client_accuracy(model, train, te)
    for k in range(10):
        with torch.no_grad():
            ref = (model(train.images[te[k]]).argmax(1) == train.labels[te[k]]).float().mean()
        assert acc[k] == pytest.approx(float(ref))
    s = spread(acc)
    assert s["worst"] == acc.min() and s["p10"] <= s["mean"] <= s["p90"] + 1e-12


def test_simulation_records_per_client_accuracy_and_trains_only_on_train_part(train, test_set):
    parts = partition(train.labels, "shards", 50, seed=0)
    sim = Simulation("2nn", train, test_set, parts, client_fraction=0.2, lr=0.05, seed=0,
                     local_test_fraction=0.2, eval_every=2)
    held = set(torch.cat(sim.local_test).tolist())
    sched = sim.make_schedule(1, sim.sample_clients(1))
    assert not held & set(torch.cat(sched.indices).tolist())
    h = sim.run(3)
    assert h.client_accuracy.shape == (3, 50)
    assert np.isnan(h.client_accuracy[0]).all() and np.isfinite(h.client_accuracy[1]).all()
    np.testing.assert_allclose(h.client_accuracy[-1], sim.client_accuracy())
    sp = h.client_spread()
    assert sp["worst"][-1] <= sp["p10"][-1] <= sp["mean"][-1] <= sp["p90"][-1]
    # shards: clients see 2 digits; the global model is much worse for some than on average
    assert sp["worst"][-1] < sp["mean"][-1] - 0.1
    with pytest.raises(ValueError, match="local_test_fraction"):
        Simulation("2nn", train, test_set, parts).client_accuracy()


def test_finetune_helps_clients_and_leaves_the_simulation(train, test_set, tmp_path):
    parts = partition(train.labels, "shards", 50, seed=0)
    sim = Simulation("2nn", train, test_set, parts, client_fraction=0.2, lr=0.05, seed=0,
                     local_test_fraction=0.2, eval_every=5)
    h = sim.run(5)
    before = [p.clone() for p in sim.global_model.parameters()]
    tuned = finetune(sim, local_epochs=1)
    assert all(torch.equal(a, b) for a, b in zip(before, sim.global_model.parameters()))
    assert np.nanmean(tuned) > np.nanmean(h.client_accuracy[-1]) + 0.03
    np.testing.assert_array_equal(tuned, finetune(sim, local_epochs=1))  # seeded
    with pytest.raises(ValueError, match="local_test_fraction"):
        finetune(Simulation("2nn", train, test_set, parts))
    # the per-client figures survive save and load
    h2 = History.load(h.save(tmp_path / "h.json"))
    np.testing.assert_array_equal(h2.client_accuracy, h.client_accuracy)


def test_engines_start_from_given_rows(small64):
    train, _ = small64
    model = get_model("2nn", seed=0).double()
    layout = FlatLayout(model)
    x = layout.flatten(model.parameters())
    g = torch.Generator().manual_seed(0)
    orders = [[torch.randperm(2000, generator=g)[:25 + 10 * i]] for i in range(3)]
    sched = Schedule.from_orders([0, 1, 2], orders, batch_size=8)
    start = x + 0.01 * torch.randn(3, layout.size, generator=g, dtype=torch.float64)
    out = [get_engine(e, model, train).train_clients(x, sched, lr=0.1, start=start)
           for e in ("sequential", "vectorized")]
    torch.testing.assert_close(out[0].delta, out[1].delta, rtol=1e-10, atol=1e-12)
    # row i starts from start[i]; its update is relative to that start
    k = sched.clients[0]
    one = get_engine("sequential", model, train).train_clients(
        start[0], Schedule.from_orders([k], orders[k:k + 1], batch_size=8), lr=0.1)
    torch.testing.assert_close(out[0].delta[0], one.delta[0])


def test_fedper_keeps_heads_on_clients(small64):
    train, test = small64
    parts = partition(train.labels, "shards", 20, seed=0)
    res = []
    for engine in ("sequential", "vectorized"):
        sim = Simulation(get_model("2nn", seed=0).double(), train, test, parts,
                         client_fraction=0.25, lr=0.05, seed=1, algorithm="fedper",
                         local_test_fraction=0.2, engine=engine, eval_every=100)
        init = sim.layout.flatten(sim.global_model.parameters()).clone()
        h = sim.run(3)
        x = sim.layout.flatten(sim.global_model.parameters())
        head = sim.head
        assert head == slice(sim.layout.offsets[4], sim.layout.size)  # fc3 weight and bias
        assert torch.equal(x[head], init[head])          # the server never learns a head
        assert not torch.equal(x[:head.start], init[:head.start])
        seen = sorted({k for r in h.records for r in [r] for k in r.clients})
        assert sim.client_store.clients("personal_head") == seen
        for k in seen:
            mk = sim.client_model(k)
            assert torch.equal(mk[:head.start], x[:head.start])
            assert not torch.equal(mk[head], init[head])
        never = next(k for k in range(20) if k not in seen)
        assert torch.equal(sim.client_model(never), x)
        res.append((x, {k: sim.client_model(k) for k in seen}, h.client_accuracy[-1]))
    torch.testing.assert_close(res[0][0], res[1][0], rtol=1e-10, atol=1e-12)
    for k in res[0][1]:
        torch.testing.assert_close(res[0][1][k], res[1][1][k], rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(res[0][2], res[1][2])


def test_fedper_needs_two_layers(train, test_set):
    parts = partition(train.labels, "iid", 10, seed=0)
    with pytest.raises(ValueError, match="fedper needs a model with at least two layers"):
        Simulation("logreg", train, test_set, parts, algorithm="fedper")
