"""Secure aggregation: exact sums, uniform-looking masked vectors, recovery after dropouts,
Shamir's threshold, the global model unchanged up to quantisation, and the refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedlab_widgets import Simulation, algorithms, get_model, partition
from fedlab_widgets.algorithms import Algorithm
from fedlab_widgets.secagg import (MODULUS, cost_model, dequantise, encode, quantise, secure_sum,
                                   shamir_reconstruct, shamir_share)


def _vectors(m=8, d=5000, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, d, generator=g, dtype=torch.float64) * 0.05


@pytest.mark.parametrize("dropout", [0.0, 0.25, 0.45])
def test_the_unmasked_sum_is_exactly_the_sum_of_the_quantised_vectors(dropout):
    x = _vectors(m=10)
    clients = [3, 17, 4, 99, 0, 12, 8, 41, 5, 7]
    out = secure_sum(x, clients, round=2, seed=1, dropout=dropout)
    assert len(out.dropped) == math.floor(dropout * 10)
    rows = [clients.index(k) for k in out.survivors]
    exact = dequantise(encode(x)[rows].sum(dim=0) % MODULUS, out.scale)
    assert torch.equal(out.total, exact)                                   # bit for bit
    plain = x[rows].sum(dim=0)
    assert float((out.total - plain).abs().max()) <= len(rows) * 0.5 / out.scale   # rounding only


def test_one_masked_vector_looks_like_uniform_noise():
    """Even a client sending all zeros: the server's view is uniform on [0, 2**32)."""
    x = _vectors(m=6, d=200_000)
    x[2] = 0.0
    out = secure_sum(x, list(range(6)), round=0, seed=5)
    seen = out.masked[2].double() / MODULUS
    counts = np.histogram(seen.numpy(), bins=64, range=(0, 1))[0]
    expected = len(seen) / 64
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 120                 # 63 degrees of freedom: p > 0.0001
    # and it does not correlate with what the client holds
    other = out.masked[0].double()
    held = encode(x)
    assert abs(float(np.corrcoef(other.numpy(), held[0].double().numpy())[0, 1])) < 0.01
    assert not torch.equal(out.masked[0], held[0])


def test_too_many_dropouts_cannot_be_unmasked_and_bad_input_is_refused():
    x = _vectors(m=4)
    with pytest.raises(ValueError, match="dropout must be a number from 0 to 0.5"):
        secure_sum(x, [0, 1, 2, 3], dropout=0.5)
    with pytest.raises(ValueError, match="fewer than the threshold"):
        secure_sum(x, [0, 1, 2, 3], dropout=0.4, threshold=4)
    with pytest.raises(ValueError, match="clients must name each of the 4 rows once"):
        secure_sum(x, [0, 1, 2, 2])


def test_shamir_threshold():
    for secret in (0, 1, 2 ** 100 + 12345):
        shares = shamir_share(secret, holders=range(7), threshold=4, seed=secret % 97)
        for subset in ((0, 1, 2, 3), (6, 2, 4, 5), (0, 1, 2, 3, 4, 5, 6)):
            assert shamir_reconstruct({h: shares[h] for h in subset}) == secret
        assert shamir_reconstruct({h: shares[h] for h in (0, 1, 2)}) != secret


def test_fixed_point_round_trip():
    v = torch.tensor([-16.0, -1e-3, 0.0, 2.5e-7, 3.75, 100.0], dtype=torch.float64)
    back = dequantise(quantise(v, 2.0 ** 20, 16.0), 2.0 ** 20)
    torch.testing.assert_close(back, v.clamp(-16, 16), atol=0.5 / 2 ** 20, rtol=0)


def _sim(small64, alg, scheme="quantity", rounds=2):
    train, test = small64
    parts = partition(train.labels, scheme, 20, seed=1, **({"sigma": 1.0} if scheme == "quantity" else {}))
    sim = Simulation(get_model("2nn", seed=0).double(), train, test, parts, lr=0.1, seed=3,
                     client_fraction=0.25, batch_size=50, eval_every=1000, algorithm=alg)
    sim.run(rounds)
    return sim


def _flat(sim):
    return torch.cat([p.detach().reshape(-1) for p in sim.global_model.parameters()])


@pytest.mark.parametrize("name,params", [("fedavg", {}), ("fedprox", {"mu": 0.1}),
                                         ("fedadam", {}),
                                         ("dp-fedavg", {"clip_norm": 0.5, "noise_multiplier": 0.5})])
def test_the_global_model_is_the_same_up_to_quantisation(small64, name, params):
    # one round: the bound is the fixed-point resolution; over more rounds a ReLU that the
    # rounding tips over a kink changes the next round's updates by far more (lr / B)
    plain = _sim(small64, algorithms.get(name, **params), rounds=1)
    masked = _sim(small64, algorithms.get(name, secure_aggregation=True, **params), rounds=1)
    out = masked.server_state["secagg"]
    diff = float((_flat(plain) - _flat(masked)).abs().max())
    tol = 2 * 5 / out.scale * (1000 if name == "fedadam" else 10)   # Adam divides by sqrt(v)
    assert 0 < diff < tol
    np.testing.assert_array_less(plain.history.bytes_up, masked.history.bytes_up)


def test_dropouts_after_masking_average_the_survivors(small64):
    raw = {}

    def keep(updates, ctx):          # runs before masking: what each client computed
        raw["delta"], raw["weight"] = updates.delta.clone(), updates.weight.clone()
        raw["clients"] = list(updates.clients)
        return updates

    alg = algorithms.get("fedavg", secure_aggregation=True, secagg_dropout=0.4, client_steps=[keep])
    train, test = small64
    parts = partition(train.labels, "quantity", 20, seed=1, sigma=1.0)
    sim = Simulation(get_model("2nn", seed=0).double(), train, test, parts, lr=0.1, seed=3,
                     client_fraction=0.5, batch_size=50, eval_every=1000, algorithm=alg)
    x0 = _flat(sim)
    sim.run(1)
    out = sim.server_state["secagg"]
    assert len(out.dropped) == 4 and len(out.survivors) == 6
    rows = [raw["clients"].index(k) for k in out.survivors]
    w = raw["weight"][rows]
    expected = (raw["delta"][rows] * w[:, None]).sum(0) / w.sum()
    torch.testing.assert_close(_flat(sim) - x0, expected, atol=1e-6, rtol=0)
    assert out.reconstructed.keys() >= {("sk", k) for k in out.dropped}


@pytest.mark.parametrize("aggregator", ["median", "trimmed_mean", "krum", "multikrum", "norm_clip"])
def test_robust_aggregation_is_refused(aggregator):
    with pytest.raises(ValueError, match="secure aggregation hides from the server"):
        algorithms.get("fedavg", aggregator=aggregator, secure_aggregation=True)


def test_other_refusals():
    with pytest.raises(ValueError, match="SCAFFOLD"):
        algorithms.get("scaffold", secure_aggregation=True)
    with pytest.raises(ValueError, match="mean aggregator only"):
        algorithms.get("fednova", secure_aggregation=True)
    with pytest.raises(ValueError, match="secagg_dropout applies only with secure_aggregation"):
        algorithms.get("fedavg", secagg_dropout=0.1)
    with pytest.raises(ValueError, match="secagg_dropout must be a number in \\[0, 0.5\\)"):
        algorithms.get("fedavg", secure_aggregation=True, secagg_dropout=0.5)
    from fedlab_widgets.secagg import SecureAggregation
    with pytest.raises(ValueError, match="custom aggregator"):
        Algorithm("x", aggregator=lambda u: u.delta.mean(0), secure_aggregation=SecureAggregation())


def test_cost_model():
    c = cost_model(199_210, 10)
    assert c["fedavg_up"] == 199_210 * 4
    overhead = c["secagg_up"] - c["fedavg_up"]
    assert 0 < overhead < 0.01 * c["fedavg_up"]         # for 10 clients: under 1% more
    big = cost_model(199_210, 1000)
    assert big["secagg_up"] - big["fedavg_up"] > 100 * overhead / 2   # grows with n


def test_the_server_holds_no_plain_vector(small64):
    """What the round's server state keeps of secure aggregation: masked vectors and the
    sum, never a client's own (encoded) row."""
    from fedlab_widgets.secagg import SecureSum
    tr, te = small64
    caught = {}

    def look(updates, ctx):                  # a client step: what the clients hold
        caught["u"] = updates.replace(delta=updates.delta.clone())
        return updates

    sim = Simulation(get_model("logreg", seed=0).double(), tr, te, partition(tr, "iid", 10, seed=0),
                     client_fraction=0.5,
                     algorithm=algorithms.get("fedavg", secure_aggregation=True, client_steps=[look]))
    sim.run(1)
    view = sim.server_state["secagg"]
    assert isinstance(view, SecureSum) and not hasattr(view, "quantised")
    u = caught["u"]
    w = (u.weight / sim.max_samples).double()
    held = encode(torch.cat([u.delta.double() * w[:, None], w[:, None]], dim=1))
    for name, value in vars(view).items():
        if isinstance(value, torch.Tensor) and value.dim() == 2:
            assert not any(torch.equal(value[i], held[i]) for i in range(len(held))), name
    assert view.masked.shape == held.shape


def test_unequal_clients_are_weighed_exactly(train, test_set):
    """A client with far more than secagg_range times the mean data keeps its full weight
    (clients send weights n_k / n_max <= 1): the masked mean equals the plain one up to
    fixed-point rounding. (Weights n_k / n_mean were clipped at 16: an error of 6e-3.)"""
    tr, te = train.subset(torch.arange(12000)), test_set.subset(torch.arange(1000))
    p = partition(tr, "quantity", 200, sigma=4.0, seed=0)
    assert float(p.sizes.max()) > 16 * float(p.sizes.double().mean())   # beyond the range
    out = {}
    for secure in (False, True):
        sim = Simulation("logreg", tr, te, p, client_fraction=1.0, batch_size=50,
                         algorithm=algorithms.get("fedavg", secure_aggregation=secure))
        sim.run(1)
        out[secure] = sim.layout.flatten(sim.global_model.parameters())
    assert float((out[True] - out[False]).abs().max()) < 1e-4
