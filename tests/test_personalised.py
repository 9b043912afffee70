"""Ditto, IFCA and q-FFL against their references: FedAvg where they must reduce to it
(bitwise), the personal step against autograd of its objective, IFCA's choice and cluster
averages by hand, q-FedAvg's update against the paper's Algorithm 2 in numpy; and the
fairness table."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from fedlab_widgets import Simulation, algorithms, get_model, partition
from fedlab_widgets.algorithms import RoundContext, weighted_mean
from fedlab_widgets.algorithms.ifca import default_init, purity
from fedlab_widgets.algorithms.qffl import EPS, LossWeighting
from fedlab_widgets.engines import ClientUpdates, FlatLayout
from fedlab_widgets.fairness import compare, fairness_summary
from fedlab_widgets.history import History
from fedlab_widgets.seeds import generator


def _flat(sim):
    return sim.layout.flatten(sim.global_model.parameters())


@pytest.fixture(scope="module")
def shards(train):
    return partition(train.labels, "shards", 20, seed=0)


# -- reductions to FedAvg, bitwise, on both engines ---------------------------------------------
@pytest.mark.parametrize("engine", ["sequential", "vectorized"])
@pytest.mark.parametrize("name,params", [("ditto", {"lam": 0.5}), ("ifca", {"num_clusters": 1}),
                                         ("qffl", {"q": 0.0})])
def test_reduces_to_fedavg_bitwise(train, test_set, shards, engine, name, params):
    """Ditto's global model is FedAvg's; IFCA with one cluster and q-FFL with q = 0 are FedAvg."""
    out = []
    for alg in ("fedavg", algorithms.get(name, **params)):
        sim = Simulation("2nn", train, test_set, shards, algorithm=alg, client_fraction=0.25,
                         lr=0.05, batch_size=50, engine=engine, seed=4, eval_every=2)
        h = sim.run(2)
        out.append((_flat(sim), h))
    (x0, h0), (x1, h1) = out
    assert torch.equal(x0, x1)
    for field in ("accuracy", "train_loss", "bytes_down", "bytes_up"):
        np.testing.assert_array_equal(getattr(h0, field), getattr(h1, field))


# -- Ditto -----------------------------------------------------------------------------------------
def _ditto(small64, engine, lam, *, rounds=1, frac=0.1, lr=0.05, epochs=1):
    train, test = small64
    parts = partition(train.labels, "dirichlet", 40, seed=2, alpha=0.5)
    sim = Simulation(get_model("2nn", seed=0).double(), train, test, parts, lr=lr, seed=5,
                     algorithm=algorithms.get("ditto", lam=lam), client_fraction=frac,
                     batch_size=16, engine=engine, eval_every=1000, local_epochs=epochs)
    x0 = _flat(sim)
    sim.run(rounds)
    return sim, x0


@pytest.mark.parametrize("engine", ["sequential", "vectorized"])
def test_ditto_personal_step_is_autograd_of_its_objective(small64, engine):
    """v <- v - lr * grad(F_k(v) + lam/2 ||v - w||^2), w the round's global model."""
    train, _ = small64
    lam, lr = 2.0, 0.05
    sim, x0 = _ditto(small64, engine, lam, lr=lr)
    clients = sim.history.records[0].clients
    schedule = sim.make_schedule(1, clients)
    names = sim.layout.names
    for row, k in enumerate(schedule.clients):
        v = x0.clone()
        for batch in schedule.batches(row):
            v.requires_grad_(True)
            out = functional_call(sim.global_model, dict(zip(names, sim.layout.views(v))),
                                  (train.images[batch],))
            objective = F.cross_entropy(out, train.labels[batch]) + lam / 2 * (v - x0).pow(2).sum()
            (g,) = torch.autograd.grad(objective, v)
            v = (v - lr * g).detach()
        torch.testing.assert_close(sim.client_model(k), v, rtol=1e-9, atol=1e-11)


def test_ditto_lam_zero_is_local_training(small64):
    """lam = 0: a client's personal model continues plain SGD on its own data from where it
    was, whatever the global model did in between."""
    sim, x0 = _ditto(small64, "sequential", 0.0, rounds=2, frac=1.0)
    k = 3
    v = x0
    for r in (1, 2):
        s = sim.make_schedule(r, [k])
        v = v + sim.engine.train_clients(x0 * 0, s, lr=sim.lr, start=v.unsqueeze(0)).delta[0]
    torch.testing.assert_close(sim.client_model(k), v, rtol=1e-9, atol=1e-11)
    assert float((sim.client_model(k) - _flat(sim)).norm()) > 0.1   # not the global model


def test_ditto_large_lam_gives_the_global_model(small64):
    """The personal model's distance to the global model falls as lam grows (at the largest
    stable lam, lr * lam = 1, each step lands within one gradient step of it)."""
    dist = []
    for lam in (0.0, 0.1, 1.0, 10.0, 20.0):        # lr * lam <= 1
        sim, x0 = _ditto(small64, "vectorized", lam, frac=0.25, epochs=4)
        sampled = sim.history.records[0].clients
        dist.append(np.mean([float((sim.client_model(k) - x0).norm()) for k in sampled]))
    assert all(a > b for a, b in zip(dist, dist[1:])), dist
    assert dist[-1] < 0.1 * dist[0], dist


def test_ditto_personal_models_help_non_iid_clients(train, test_set, shards):
    acc = {}
    for name in ("fedavg", "ditto"):
        sim = Simulation("2nn", train, test_set, shards, algorithm=name, client_fraction=0.5,
                         lr=0.05, batch_size=50, seed=1, local_test_fraction=0.2, eval_every=3)
        sim.run(3)
        acc[name] = np.nanmean(sim.client_accuracy())
    assert acc["ditto"] > acc["fedavg"] + 0.1, acc


def test_ditto_refuses_an_unstable_lam(train, test_set, shards):
    with pytest.raises(ValueError, match=r"lam must be at most 1 / lr = 10 .*got lam=30 with lr=0.1"):
        Simulation("2nn", train, test_set, shards, algorithm=algorithms.get("ditto", lam=30), lr=0.1)
    Simulation("2nn", train, test_set, shards, algorithm=algorithms.get("ditto", lam=10), lr=0.1)


# -- IFCA ------------------------------------------------------------------------------------------
def test_default_init_draws_as_pytorch_does():
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for each weight and the bias after it, as torch."""
    model = get_model("2nn", seed=0)
    layout = FlatLayout(model)
    x = default_init(layout, generator(1))
    fan_in = [784, 784, 200, 200, 200, 200]
    for v, p, f in zip(layout.views(x), model.parameters(), fan_in):
        assert float(v.abs().max()) <= 1 / f ** 0.5
        torch.testing.assert_close(v.std(), p.detach().std(), rtol=0.15, atol=0)
    assert torch.equal(x, default_init(layout, generator(1)))
    assert not torch.equal(x, default_init(layout, generator(2)))


@pytest.mark.parametrize("engine", ["sequential", "vectorized"])
def test_ifca_round_by_hand(small64, engine):
    """Each client joins the model with its lowest loss on all its training data, trains
    it, and each cluster becomes the weighted mean of its own clients' models."""
    train, test = small64
    parts = partition(train.labels, "iid", 30, seed=0)
    sim = Simulation(get_model("2nn", seed=0).double(), train, test, parts, lr=0.1, seed=2,
                     algorithm=algorithms.get("ifca", num_clusters=3), client_fraction=0.5,
                     batch_size=20, engine=engine, eval_every=1000)
    x0 = _flat(sim)
    ctx = sim.context()
    models = sim.algorithm.personal.models(ctx).clone()     # [x0, two drawn models]
    sim.run(1)
    rec = sim.history.records[0]
    loss = torch.empty(3, len(rec.clients), dtype=torch.float64)
    for j in range(3):
        m = get_model("2nn").double()
        with torch.no_grad():
            torch._foreach_copy_(list(m.parameters()), sim.layout.views(models[j]))
        for i, k in enumerate(rec.clients):
            ix = parts.client_indices[k]
            loss[j, i] = F.cross_entropy(m(train.images[ix]), train.labels[ix])
    choice = loss.argmin(0)
    assert rec.clusters == choice.tolist()
    assert len(set(rec.clusters)) > 1
    schedule = sim.make_schedule(1, rec.clients)
    order = [rec.clients.index(k) for k in schedule.clients]
    start = models[choice[order]]
    upd = sim.engine.train_clients(x0, schedule, lr=sim.lr, start=start)
    after = [_flat(sim)] + list(sim.server_state["ifca_models"])
    for j in range(3):
        rows = [i for i, o in enumerate(order) if choice[o] == j]
        w = upd.weight[rows] / upd.weight[rows].sum()
        torch.testing.assert_close(after[j], models[j] + w @ upd.delta[rows], rtol=1e-10, atol=1e-12)


def test_ifca_downloads_every_cluster_model(train, test_set, shards):
    h = {}
    for alg in ("fedavg", algorithms.get("ifca", num_clusters=3)):
        sim = Simulation("logreg", train, test_set, shards, algorithm=alg, client_fraction=0.2)
        h[sim.algorithm.name] = sim.run(1)
    np.testing.assert_array_equal(h["ifca"].bytes_down, 3 * np.asarray(h["fedavg"].bytes_down))
    np.testing.assert_array_equal(h["ifca"].bytes_up, h["fedavg"].bytes_up)


def test_purity():
    assert purity([2, 2, 0, 0, 1], [0, 0, 90, 90, 180]) == 1.0
    assert purity([0, 0, 0, 0], [0, 90, 180, 270]) == 0.25
    with pytest.raises(ValueError, match="one true group per client"):
        purity([0, 1], [0])


def test_ifca_history_keeps_the_clusters(tmp_path, train, test_set, shards):
    sim = Simulation("logreg", train, test_set, shards, client_fraction=0.3,
                     algorithm=algorithms.get("ifca", num_clusters=2), local_test_fraction=0.2)
    h = sim.run(2)
    assert all(len(r.clusters) == len(r.clients) for r in h.records)
    path = tmp_path / "h.json"
    h.save(path)
    assert History.load(path).records[1].clusters == h.records[1].clusters
    assert np.isfinite(sim.client_accuracy()).all()


# -- q-FFL -----------------------------------------------------------------------------------------
def _algorithm_2(w, w_bar, F_w, q, lr):
    """q-FedAvg's server update, Li et al. 2020, Algorithm 2, in numpy (L = 1/lr)."""
    L = 1.0 / lr
    dw = L * (w[None] - w_bar)                                 # Delta w_k
    Fq = np.power(F_w + EPS, q)
    deltas = Fq[:, None] * dw
    h = q * np.power(F_w + EPS, q - 1) * (dw ** 2).sum(1) + L * Fq
    return w - deltas.sum(0) / h.sum()


@pytest.mark.parametrize("q", [0.0, 0.5, 1.0, 5.0])
@pytest.mark.parametrize("equal_sizes", [True, False])
def test_qffl_update_is_algorithm_2(q, equal_sizes):
    rng = np.random.default_rng(int(q * 10) + equal_sizes)
    M, D, lr = 6, 11, 0.05
    w = rng.normal(size=D)
    w_bar = w + 0.02 * rng.normal(size=(M, D))
    F_w = rng.uniform(0.1, 2.5, size=M)
    n = np.full(M, 50.0) if equal_sizes else rng.integers(10, 100, size=M).astype(float)
    updates = ClientUpdates(list(range(M)), torch.tensor(w_bar - w), torch.tensor(n),
                            torch.ones(M, dtype=torch.int64), torch.zeros(M, dtype=torch.float64))
    ctx = RoundContext(round=1, x=torch.tensor(w), lr=lr, num_clients=M, total_samples=int(n.sum()),
                       client_loss=lambda models, clients: torch.tensor(F_w)[None])
    out = LossWeighting(q).client_step(updates, ctx)
    got = (ctx.x + weighted_mean(out)).numpy()
    if equal_sizes:
        want = _algorithm_2(w, w_bar, F_w, q, lr)
    else:   # sampled uniformly, so both of the paper's sums weigh client k by n_k
        want = _algorithm_2(w, np.repeat(w_bar, n.astype(int), 0), np.repeat(F_w, n.astype(int)), q, lr)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_qffl_weighs_each_client_by_its_loss_to_the_q(small64):
    """The weights are n_k F_k(x)^q, F_k the client's loss at the round's global model on
    all its training data (computed here directly)."""
    train, test = small64
    parts = partition(train.labels, "shards", 30, seed=0)
    seen = {}

    def spy(updates, ctx):
        seen.update(w=updates.weight.clone(), clients=list(updates.clients), x=ctx.x.clone())
        return updates
    q = 5.0
    alg = algorithms.get("qffl", q=q, client_steps=[spy])
    sim = Simulation(get_model("2nn", seed=0).double(), train, test, parts, algorithm=alg,
                     client_fraction=0.3, lr=0.05, eval_every=100)
    sim.run(2)
    m = get_model("2nn").double()
    with torch.no_grad():
        torch._foreach_copy_(list(m.parameters()), sim.layout.views(seen["x"]))
        F_k = torch.stack([F.cross_entropy(m(train.images[parts.client_indices[k]]),
                                           train.labels[parts.client_indices[k]])
                           for k in seen["clients"]])
    n = torch.tensor([float(len(parts.client_indices[k])) for k in seen["clients"]],
                     dtype=torch.float64)
    torch.testing.assert_close(seen["w"], n * (F_k + EPS) ** q, rtol=1e-9, atol=0)


# -- where algorithms go -----------------------------------------------------------------------
@pytest.mark.parametrize("call,match", [
    (lambda: algorithms.get("ifca", num_clusters=0), r"num_clusters must be an integer from 1 to 16"),
    (lambda: algorithms.get("ifca", num_clusters=2.5), r"num_clusters must be an integer"),
    (lambda: algorithms.get("qffl", q=-1), r"q must be a number from 0 to 20"),
    (lambda: algorithms.get("ditto", lam=float("nan")), r"lam must be a number"),
    (lambda: algorithms.get("ifca", aggregator="median"), r"aggregator does not apply to ifca: each cluster"),
    (lambda: algorithms.get("qffl", aggregator="median"), r"aggregator does not apply to qffl"),
    (lambda: algorithms.get("ifca", secure_aggregation=True), r"secure_aggregation does not combine with ifca"),
    (lambda: algorithms.get("qffl", differential_privacy=True), r"differential_privacy does not combine with qffl"),
])
def test_bad_settings_name_the_parameter(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_ditto_composes_with_secure_aggregation_and_robust_aggregators():
    assert algorithms.get("ditto", lam=1, secure_aggregation=True).secagg is not None
    assert algorithms.get("ditto", aggregator="median").aggregator_name == "median"


def test_flower_export_says_why_not(train, test_set, shards):
    from fedlab_widgets.flower.export import check_exportable
    for name, why in (("qffl", "each client's loss"), ("ifca", "every cluster model"),
                      ("ditto", "keeps state on each client")):
        sim = Simulation("logreg", train, test_set, shards, algorithm=name)
        with pytest.raises(ValueError, match=why):
            check_exportable(sim)


# -- fairness --------------------------------------------------------------------------------------
def test_fairness_summary_against_numpy():
    a = np.array([0.9, np.nan, 0.6, 0.75, 1.0])
    s = fairness_summary(a)
    b = a[np.isfinite(a)]
    assert s == {"clients": 4, "mean": pytest.approx(b.mean()),
                 "p10": pytest.approx(np.percentile(b, 10)), "worst": 0.6,
                 "variance": pytest.approx(np.var(b * 100))}
    with pytest.raises(ValueError, match="no per-client accuracy"):
        fairness_summary([np.nan])
    f = compare({"a": b, "b": b * 0.5 + 0.4})
    assert f.best("variance") == "b" and f.best("mean") == "a"
    with pytest.raises(ValueError, match="column must be one of"):
        f.best("median")
    assert "variance" in f.table().splitlines()[0]
    ax = f.plot()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]
