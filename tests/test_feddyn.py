"""FedDyn (Acar et al. 2021) against references: autograd of its local objective on both engines
(float64), and its client and server state updates against the paper's Algorithm 1 in numpy."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from fedlab_widgets import Simulation, algorithms, get_model, partition
from fedlab_widgets.algorithms import ClientStore, RoundContext
from fedlab_widgets.engines import ClientUpdates, FlatLayout, Schedule, get_engine
from fedlab_widgets.round import server_half


@pytest.mark.parametrize("engine", ["sequential", "vectorized"])
def test_local_steps_are_autograd_of_the_dynamic_objective(small64, engine):
    """Each local step descends L_k(w) - <g_k, w> + alpha/2 ||w - x||^2 (float64)."""
    train, _ = small64
    model = get_model("2nn", seed=0).double()
    layout = FlatLayout(model)
    x = layout.flatten(model.parameters())
    alpha, lr = 0.3, 0.05
    alg = algorithms.get("feddyn", dyn_alpha=alpha)
    g = torch.Generator().manual_seed(0)
    store = ClientStore()
    gk = 0.01 * torch.randn(2, x.numel(), generator=g, dtype=torch.float64)
    store.scatter("feddyn_g", [0, 1], gk)
    ctx = RoundContext(round=2, x=x, lr=lr, num_clients=10, total_samples=1000, store=store)
    orders = [[torch.randperm(len(train.labels), generator=g)[:30 + 7 * i]] for i in range(2)]
    sched = Schedule.from_orders([0, 1], orders, batch_size=8)
    got = get_engine(engine, model, train).train_clients(x, sched, lr=lr,
                                                         rule=alg.local_rule([0, 1], ctx))
    for row in range(2):
        w = x.clone()
        for batch in sched.batches(row):
            w.requires_grad_(True)
            out = functional_call(model, dict(zip(layout.names, layout.views(w))),
                                  (train.images[batch],))
            objective = F.cross_entropy(out, train.labels[batch]) - (gk[row] * w).sum() \
                + alpha / 2 * (w - x).pow(2).sum()
            (grad,) = torch.autograd.grad(objective, w)
            w = (w - lr * grad).detach()
        torch.testing.assert_close(got.delta[row], w - x, rtol=1e-10, atol=1e-12)


def test_state_updates_follow_algorithm_1_in_numpy():
    """g_k <- g_k - alpha delta_k; h <- h - alpha/K sum delta_k; x <- x + mean delta - h/alpha."""
    rng = np.random.default_rng(0)
    K, d, alpha = 10, 6, 0.2
    alg = algorithms.get("feddyn", dyn_alpha=alpha)
    x = torch.tensor(rng.normal(size=d))
    state, store = {}, ClientStore()
    g_ref, h_ref, x_ref = np.zeros((K, d)), np.zeros(d), x.numpy().copy()
    for r, clients in enumerate([[1, 4, 7], [0, 4, 9, 2]], start=1):
        delta = rng.normal(size=(len(clients), d))
        updates = ClientUpdates(clients=clients, delta=torch.tensor(delta),
                                weight=torch.ones(len(clients), dtype=torch.float64),
                                steps=torch.ones(len(clients), dtype=torch.int64),
                                loss=torch.zeros(len(clients), dtype=torch.float64))
        ctx = RoundContext(round=r, x=torch.tensor(x_ref), lr=0.1, num_clients=K,
                           total_samples=K * 100, state=state, store=store)
        x_new = server_half(alg, updates, ctx).numpy()
        # the paper, written out
        g_ref[clients] -= alpha * delta
        h_ref = h_ref - alpha / K * delta.sum(0)
        x_ref = (x_ref + delta).mean(0) - h_ref / alpha
        np.testing.assert_allclose(x_new, x_ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(state["feddyn_h"].numpy(), h_ref, rtol=1e-12, atol=1e-12)
        for k in clients:
            np.testing.assert_allclose(store.get("feddyn_g", k).numpy(), g_ref[k], rtol=1e-12)


def test_feddyn_trains_and_is_everywhere_algorithms_go(train, test_set):
    parts = partition(train.labels, "shards", 50, seed=0)
    h = Simulation("2nn", train, test_set, parts, client_fraction=0.2, local_epochs=2,
                   batch_size=50, lr=0.05, seed=0, algorithm=algorithms.get("feddyn", dyn_alpha=0.01)
                   ).run(4)
    assert not h.diverged and h.accuracy[-1] > 0.5, h.accuracy
    assert h.config["algorithm"] == "feddyn" and h.config["algorithm_params"] == {"dyn_alpha": 0.01}
    assert "feddyn" in algorithms.NAMES and algorithms.PARAMETERS["feddyn"][0].name == "dyn_alpha"
