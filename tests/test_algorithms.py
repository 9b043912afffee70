"""The algorithms against references: autograd of FedProx's objective, SCAFFOLD and the
server optimisers computed by hand, FedAvg where they must reduce to it, and both engines
agreeing in float64 for every algorithm."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from fedlab_widgets import Simulation, algorithms, get_model, partition
from fedlab_widgets.algorithms import Algorithm, ServerAdaptive, ServerSGD, fednova, weighted_mean
from fedlab_widgets.engines import ClientUpdates, FlatLayout, LocalRule, Schedule, get_engine


def _params(sim):
    return [p.detach().clone() for p in sim.global_model.parameters()]


def _assert_params_close(a, b, **tol):
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, **tol)


# -- every algorithm: both engines agree (float64) ----------------------------------------------
CASES = {
    "quantity-B10": (("quantity", {"sigma": 1.0}), dict(client_fraction=0.1, batch_size=10)),
    "dirichlet-E2-B7": (("dirichlet", {"alpha": 0.3}),
                        dict(client_fraction=0.1, batch_size=7, local_epochs=2)),
    "iid-fullbatch": (("iid", {}), dict(client_fraction=0.2, batch_size=None, local_epochs=2)),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("name", algorithms.NAMES)
def test_engines_agree_float64(small64, name, case):
    (scheme, sp), kw = CASES[case]
    train, test = small64
    parts = partition(train.labels, scheme, 100, seed=1, **sp)
    params = {"fedprox": {"mu": 0.5},  # a mu large enough to matter
              "dp-fedavg": {"clip_norm": 0.3, "noise_multiplier": 0.05}}.get(name, {})
    out = []
    if algorithms.ALGORITHMS.trait(name, "asynchronous"):   # FedAsync, FedBuff: on the clock
        kw = {**kw, "devices": "phones"}
    for engine in ("sequential", "vectorized"):
        sim = Simulation(get_model("2nn", seed=0).double(), train, test, parts, lr=0.1, seed=3,
                         engine=engine, eval_every=1000,
                         algorithm=algorithms.get(name, **params), **kw)
        h = sim.run(3)
        assert not h.diverged, h.stop_reason
        out.append((_params(sim), h, sim))
    (p_seq, h_seq, s_seq), (p_vec, h_vec, s_vec) = out
    _assert_params_close(p_vec, p_seq, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(h_vec.train_loss, h_seq.train_loss, rtol=1e-10)
    np.testing.assert_allclose(h_vec.update_norm, h_seq.update_norm, rtol=1e-9)
    state = {"scaffold": "scaffold_c", "ditto": "ditto_v"}.get(name)
    if state:   # the control variates, the personal models too
        assert s_seq.client_store.clients(state)
        for k in s_seq.client_store.clients(state):
            torch.testing.assert_close(s_vec.client_store.get(state, k),
                                       s_seq.client_store.get(state, k),
                                       rtol=1e-9, atol=1e-12)
    if name == "ifca":      # the other cluster models, and who joined which
        torch.testing.assert_close(s_vec.server_state["ifca_models"],
                                   s_seq.server_state["ifca_models"], rtol=1e-10, atol=1e-12)
        assert [r.clusters for r in h_vec.records] == [r.clusters for r in h_seq.records]


@pytest.mark.parametrize("name", ["fedprox", "scaffold"])
@pytest.mark.parametrize("model,kw", [("small_cnn", dict(client_fraction=0.05, batch_size=10)),
                                      ("cnn", dict(client_fraction=0.02, batch_size=50))])
def test_local_rules_agree_on_the_convolutional_paths(small64, name, model, kw):
    """vmap (small_cnn, B=10) and per-client autograd (cnn, B=50) paths with a correction."""
    train, test = small64
    parts = partition(train.labels, "quantity", 100, seed=1, sigma=1.0)
    alg = algorithms.get(name, **({"mu": 0.5} if name == "fedprox" else {}))
    res = []
    for engine in ("sequential", "vectorized"):
        sim = Simulation(get_model(model, seed=0).double(), train, test, parts, lr=0.05, seed=3,
                         engine=engine, eval_every=1000, algorithm=alg, **kw)
        sim.run(2 if model == "small_cnn" else 1)
        res.append(_params(sim))
    _assert_params_close(res[1], res[0], rtol=1e-10, atol=1e-12)


# -- FedProx ------------------------------------------------------------------------------------
def _schedule(train, rows=2, n=30, batch=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    clients = list(range(rows))
    orders = [[torch.randperm(len(train.labels), generator=g)[:n + 7 * i]] for i in clients]
    return Schedule.from_orders(clients, orders, batch_size=batch)


@pytest.mark.parametrize("engine", ["sequential", "vectorized"])
def test_fedprox_step_is_autograd_of_the_proximal_objective(small64, engine):
    """Each local step descends loss + mu/2 ||w - x||^2, computed here by autograd."""
    train, _ = small64
    model = get_model("2nn", seed=0).double()
    layout = FlatLayout(model)
    x = layout.flatten(model.parameters())
    mu, lr = 0.7, 0.05
    sched = _schedule(train)
    got = get_engine(engine, model, train).train_clients(x, sched, lr=lr, rule=LocalRule(mu=mu))
    names = layout.names
    for row in range(len(sched)):
        w = x.clone()
        for batch in sched.batches(row):
            w.requires_grad_(True)
            out = functional_call(model, dict(zip(names, layout.views(w))),
                                  (train.images[batch],))
            objective = F.cross_entropy(out, train.labels[batch]) + mu / 2 * (w - x).pow(2).sum()
            (g,) = torch.autograd.grad(objective, w)
            w = (w - lr * g).detach()
        torch.testing.assert_close(got.delta[row], w - x, rtol=1e-10, atol=1e-12)
    # and the proximal term does move the result: mu = 0 is a different (FedAvg) step
    plain = get_engine(engine, model, train).train_clients(x, sched, lr=lr)
    assert float((plain.delta - got.delta).abs().max()) > 1e-4


def test_fedprox_with_mu_zero_is_fedavg_exactly(train, test_set):
    parts = partition(train.labels, "shards", 100, seed=0)
    kw = dict(client_fraction=0.1, local_epochs=2, batch_size=10, lr=0.05, seed=0)
    a = Simulation("2nn", train, test_set, parts, algorithm=algorithms.get("fedprox", mu=0.0), **kw)
    b = Simulation("2nn", train, test_set, parts, algorithm="fedavg", **kw)
    a.run(2), b.run(2)
    _assert_params_close(_params(a), _params(b), rtol=0, atol=0)


def test_fedprox_large_mu_keeps_clients_closer(train, test_set):
    """The proximal term's purpose: client updates shrink as mu grows (measured norm)."""
    parts = partition(train.labels, "shards", 100, seed=0)
    kw = dict(client_fraction=0.1, local_epochs=5, batch_size=50, lr=0.05, seed=0, eval_every=100)
    norms = [Simulation("2nn", train, test_set, parts, algorithm=algorithms.get("fedprox", mu=mu),
                        **kw).run(2).update_norm.mean() for mu in (0.0, 0.1, 1.0)]
    assert norms[0] > norms[1] > norms[2], norms


# -- SCAFFOLD ------------------------------------------------------------------------------------
def test_scaffold_follows_algorithm_1_option_2_by_hand(small64):
    """A plain re-implementation of Karimireddy et al.'s Algorithm 1 (equal client sizes)."""
    train, test = small64
    N, n = 4, 40
    parts = partition(train.labels[:N * n], "iid", N, seed=0)
    parts = dataclasses.replace(parts, labels=train.labels)  # indices into the whole set
    eta_l, eta_g, B = 0.1, 0.8, 10
    sim = Simulation(get_model("2nn", seed=0).double(), train, test, parts, client_fraction=0.5,
                     batch_size=B, lr=eta_l, seed=5, eval_every=1000,
                     algorithm=algorithms.get("scaffold", server_lr=eta_g))
    model = get_model("2nn", seed=0).double()
    layout = FlatLayout(model)
    x = layout.flatten(model.parameters())
    c = torch.zeros_like(x)
    ci = {i: torch.zeros_like(x) for i in range(N)}
    for r in (1, 2, 3):
        S = sim.sample_clients(r)
        dy, dc = [], []
        for i in S:
            y, K = x.clone(), 0
            order = sim.client_order(r, i, 0)
            for s in range(0, n, B):
                batch = order[s:s + B]
                y.requires_grad_(True)
                out = functional_call(model, dict(zip(layout.names, layout.views(y))),
                                      (train.images[batch],))
                (g,) = torch.autograd.grad(F.cross_entropy(out, train.labels[batch]), y)
                y = (y - eta_l * (g - ci[i] + c)).detach()
                K += 1
            ci_new = ci[i] - c + (x - y) / (K * eta_l)          # option II
            dy.append(y - x)
            dc.append(ci_new - ci[i])
            ci[i] = ci_new
        x = x + eta_g * torch.stack(dy).mean(0)
        c = c + len(S) / N * torch.stack(dc).mean(0)
    sim.run(3)
    torch.testing.assert_close(layout.flatten(sim.global_model.parameters()), x,
                               rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(sim.server_state["scaffold_c"], c, rtol=1e-9, atol=1e-12)
    for i in sim.client_store.clients("scaffold_c"):
        torch.testing.assert_close(sim.client_store.get("scaffold_c", i), ci[i],
                                   rtol=1e-9, atol=1e-12)
    # state exists only for clients that were sampled
    sampled = sorted({k for r in sim.history.records for k in r.clients})
    assert sim.client_store.clients("scaffold_c") == sampled


def test_scaffold_sends_twice_fedavgs_bytes(train, test_set):
    parts = partition(train.labels, "iid", 20, seed=0)
    h = {a: Simulation("2nn", train, test_set, parts, algorithm=a, eval_every=10).run(1)
         for a in ("fedavg", "scaffold")}
    assert h["scaffold"].bytes_up[0] == 2 * h["fedavg"].bytes_up[0] == 2 * 2 * 199_210 * 4
    assert h["scaffold"].bytes_down[0] == 2 * h["fedavg"].bytes_down[0]


# -- FedNova ------------------------------------------------------------------------------------
def _updates(delta, weight, steps):
    delta = torch.as_tensor(delta, dtype=torch.float64)
    return ClientUpdates(list(range(len(delta))), delta, torch.tensor(weight, dtype=torch.float64),
                         torch.tensor(steps), torch.zeros(len(delta), dtype=torch.float64))


def test_fednova_by_hand_and_equal_steps_is_weighted_mean():
    u = _updates([[2.0, 0.0], [0.0, 6.0]], [1.0, 3.0], [2, 6])
    # p = (1/4, 3/4); tau_eff = 1/4*2 + 3/4*6 = 5; d = (1, 0), (0, 1)
    torch.testing.assert_close(fednova(u), torch.tensor([5 * 0.25, 5 * 0.75], dtype=torch.float64))
    torch.testing.assert_close(weighted_mean(u), torch.tensor([0.5, 4.5], dtype=torch.float64))
    same = _updates([[2.0, 0.0], [0.0, 6.0]], [1.0, 3.0], [4, 4])
    torch.testing.assert_close(fednova(same), weighted_mean(same))


def test_fednova_with_equal_local_steps_is_fedavg(train, test_set):
    parts = partition(train.labels, "iid", 100, seed=0)   # equal sizes: equal steps
    kw = dict(client_fraction=0.1, batch_size=10, lr=0.05, seed=0, eval_every=10)
    a = Simulation("2nn", train, test_set, parts, algorithm="fednova", **kw)
    b = Simulation("2nn", train, test_set, parts, algorithm="fedavg", **kw)
    a.run(2), b.run(2)
    _assert_params_close(_params(a), _params(b), rtol=1e-5, atol=1e-6)


# -- server optimisers ------------------------------------------------------------------------------
def test_fedavgm_without_momentum_at_server_lr_one_is_fedavg(train, test_set):
    parts = partition(train.labels, "dirichlet", 50, alpha=0.5, seed=0)
    kw = dict(client_fraction=0.1, batch_size=20, lr=0.05, seed=0, eval_every=10)
    a = Simulation("2nn", train, test_set, parts,
                   algorithm=algorithms.get("fedavgm", server_lr=1.0, momentum=0.0), **kw)
    b = Simulation("2nn", train, test_set, parts, **kw)
    a.run(2), b.run(2)
    _assert_params_close(_params(a), _params(b), rtol=0, atol=0)


def test_fedavgm_momentum_by_hand():
    opt, state = ServerSGD(lr=0.5, momentum=0.9), {}
    x = opt.step(torch.tensor([1.0]), torch.tensor([0.2]), state)   # v = 0.2; x = 1 + 0.1
    x = opt.step(x, torch.tensor([-0.1]), state)                    # v = 0.18 - 0.1 = 0.08
    torch.testing.assert_close(x, torch.tensor([1.0 + 0.1 + 0.04]))


@pytest.mark.parametrize("kind", ["adagrad", "yogi", "adam"])
def test_adaptive_server_optimisers_follow_reddi_algorithm_2_by_hand(kind):
    """Two rounds of Reddi et al. 2021, Algorithm 2, written out with plain floats."""
    lr, b1, b2, tau = 0.1, 0.9, 0.99, 1e-3
    x0 = [1.0, -2.0]
    deltas = [[0.1, -0.3], [-0.2, 0.05]]
    m, v, x = [0.0, 0.0], [tau ** 2, tau ** 2], list(x0)
    for d in deltas:
        for j in range(2):
            m[j] = b1 * m[j] + (1 - b1) * d[j]
            if kind == "adagrad":
                v[j] = v[j] + d[j] ** 2
            elif kind == "yogi":
                v[j] = v[j] - (1 - b2) * d[j] ** 2 * math.copysign(1, v[j] - d[j] ** 2)
            else:
                v[j] = b2 * v[j] + (1 - b2) * d[j] ** 2
            x[j] = x[j] + lr * m[j] / (math.sqrt(v[j]) + tau)
    opt, state = ServerAdaptive(kind, lr=lr, beta1=b1, beta2=b2, tau=tau), {}
    xt = torch.tensor(x0, dtype=torch.float64)
    for d in deltas:
        xt = opt.step(xt, torch.tensor(d, dtype=torch.float64), state)
    torch.testing.assert_close(xt, torch.tensor(x, dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_adaptive_optimisers_train_on_mnist(train, test_set):
    parts = partition(train.labels, "shards", 100, seed=0)
    kw = dict(client_fraction=0.1, batch_size=50, lr=0.05, seed=0, eval_every=5)
    for name in ("fedadam", "fedyogi", "fedadagrad", "fedavgm"):
        h = Simulation("2nn", train, test_set, parts, algorithm=name, **kw).run(5)
        assert h.final_accuracy > 0.5, (name, h.accuracy)


# -- composing your own ------------------------------------------------------------------------------
def test_custom_aggregator_and_server_step_run_on_the_fast_engine(train, test_set):
    parts = partition(train.labels, "iid", 100, seed=0)   # equal sizes
    kw = dict(client_fraction=0.1, batch_size=10, lr=0.05, seed=0, eval_every=10)

    def plain_mean(updates):
        return updates.delta.mean(0)

    def half(delta, ctx):
        assert ctx.round >= 1 and ctx.x.shape == delta.shape
        return 0.5 * delta

    mine = Simulation("2nn", train, test_set, parts, algorithm=Algorithm(
        "mine", aggregator=plain_mean, server_steps=[half]), **kw)
    ref = Simulation("2nn", train, test_set, parts,
                     algorithm=algorithms.get("fedavgm", server_lr=0.5, momentum=0.0), **kw)
    assert mine.engine.name == "vectorized"
    mine.run(2), ref.run(2)
    _assert_params_close(_params(mine), _params(ref), rtol=1e-5, atol=1e-6)
    assert mine.history.config["aggregator"] == "plain_mean"
    assert mine.history.config["server_steps"] == ["half"]
    assert mine.history.label.startswith("mine(aggregator=plain_mean, half)")


def test_client_step_sees_every_update(train, test_set):
    parts = partition(train.labels, "iid", 20, seed=0)
    seen = []

    def spy(updates, ctx):
        seen.append((list(updates.clients), tuple(updates.delta.shape), updates.steps.tolist()))
        return updates

    sim = Simulation("2nn", train, test_set, parts, client_fraction=0.2, batch_size=100,
                     algorithm=algorithms.get("fedavg", client_steps=[spy]), eval_every=10)
    sim.run(2)
    assert [sorted(c) for c, _, _ in seen] == [r.clients for r in sim.history.records]
    assert all(shape == (4, 199_210) and steps == [30] * 4 for _, shape, steps in seen)


# -- records, labels, bad input ---------------------------------------------------------------------
def test_history_records_the_algorithm(tmp_path, train, test_set):
    parts = partition(train.labels, "iid", 20, seed=0)
    sim = Simulation("2nn", train, test_set, parts,
                     algorithm=algorithms.get("fedadam", server_lr=0.03), eval_every=10)
    h = sim.run(1)
    assert h.config["algorithm"] == "fedadam"
    assert h.config["algorithm_params"] == {"server_lr": 0.03, "beta1": 0.9, "beta2": 0.99,
                                            "tau": 0.001}
    assert h.label.startswith("fedadam(server_lr=0.03, beta1=0.9, beta2=0.99, tau=0.001), 2nn")
    from fedlab_widgets import History
    assert History.load(h.save(tmp_path / "h.json")).config == h.config
    assert np.isfinite(h.update_norm).all() and h.update_norm[0] > 0


def test_reset_clears_algorithm_state(train, test_set):
    parts = partition(train.labels, "iid", 20, seed=0)
    sim = Simulation("2nn", train, test_set, parts, algorithm="scaffold", eval_every=10)
    first = sim.run(2).train_loss.copy()
    assert len(sim.client_store) > 0 and "scaffold_c" in sim.server_state
    sim.reset()
    assert len(sim.client_store) == 0 and sim.server_state == {}
    np.testing.assert_array_equal(sim.run(2).train_loss, first)


@pytest.mark.parametrize("call,match", [
    (lambda: algorithms.get("fedsgd"), r"algorithm must be one of fedavg, fedprox, scaffold"),
    (lambda: algorithms.get("fedprox", mu=-0.1), r"mu must be a number from 0 to 10; got -0.1"),
    (lambda: algorithms.get("fedprox", mu="0.1"), r"mu must be a number"),
    (lambda: algorithms.get("fedprox", mu=True), r"mu must be a number"),
    (lambda: algorithms.get("fedprox", mu=math.nan), r"mu must be a number"),
    (lambda: algorithms.get("fedprox", server_lr=1.0),
     r"unknown parameter\(s\) server_lr for algorithm 'fedprox'; its parameters: mu"),
    (lambda: algorithms.get("fedavg", mu=0.1), r"unknown parameter\(s\) mu .*parameters: none"),
    (lambda: algorithms.get("fedavgm", momentum=1.0), r"momentum must be a number in \[0, 1\)"),
    (lambda: algorithms.get("fedadam", server_lr=0), r"server_lr must be a number in \(0, 100\]"),
    (lambda: algorithms.get("fedadam", tau=0), r"tau must be a number in \(0, 1\]"),
    (lambda: algorithms.get("fedyogi", beta2=1.0), r"beta2 must be a number in \[0, 1\)"),
    (lambda: algorithms.get("fedadagrad", beta2=0.9), r"unknown parameter\(s\) beta2"),
    (lambda: algorithms.get("fednova", aggregator="mean"), r"aggregator does not apply to fednova"),
    (lambda: algorithms.get("fedavg", aggregator="geomedian"),
     r"aggregator must be one of mean, fednova, median, trimmed_mean, krum, multikrum, norm_clip"),
    (lambda: algorithms.get("fedavg", server_steps=[1]), r"server_steps must be a list of functions"),
])
def test_bad_algorithm_settings(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_simulation_rejects_bad_algorithm(train, test_set):
    parts = partition(train.labels, "iid", 10, seed=0)
    with pytest.raises(ValueError, match="algorithm must be one of fedavg"):
        Simulation("2nn", train, test_set, parts, algorithm="fedsgd")
    with pytest.raises(ValueError, match="algorithm must be a name"):
        Simulation("2nn", train, test_set, parts, algorithm=3)


def test_diverging_server_optimiser_stops_with_a_reason(train, test_set):
    parts = partition(train.labels, "iid", 10, seed=0)
    sim = Simulation("2nn", train, test_set, parts, client_fraction=0.2,
                     algorithm=algorithms.get("fedavgm", server_lr=100.0, momentum=0.99))
    h = sim.run(30)
    assert h.diverged and "server_lr" in h.stop_reason
    assert all(torch.isfinite(q).all() for q in sim.global_model.parameters())
