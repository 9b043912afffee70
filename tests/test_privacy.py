"""DP-FedAvg against references: FedAvg where it must reduce to it, the clip bound, the
noise's measured standard deviation, and epsilon against dp-accounting computed here."""

from __future__ import annotations

import math

import dp_accounting as dpa
import numpy as np
import pytest
import torch
from dp_accounting import rdp

from fedlab_widgets import History, Simulation, algorithms, get_model, partition
from fedlab_widgets.algorithms import Algorithm, DifferentialPrivacy
from fedlab_widgets.algorithms.base import RoundContext
from fedlab_widgets.algorithms.privacy import clip_updates
from fedlab_widgets.engines import ClientUpdates


def _flat(sim):
    return torch.cat([p.detach().reshape(-1) for p in sim.global_model.parameters()])


def _run(small64, alg, scheme="iid", rounds=2, **kw):
    train, test = small64
    parts = partition(train.labels, scheme, 20, seed=1, **({"sigma": 1.0} if scheme == "quantity" else {}))
    sim = Simulation(get_model("2nn", seed=0).double(), train, test, parts, lr=0.1, seed=3,
                     client_fraction=0.25, batch_size=50, eval_every=1000, algorithm=alg, **kw)
    sim.run(rounds)
    return sim


def test_no_noise_and_no_clipping_is_fedavg_for_equal_clients(small64):
    """IID clients of equal size: the fixed denominator m equals FedAvg's weights."""
    dp = _run(small64, algorithms.get("dp-fedavg", clip_norm=1e4, noise_multiplier=0.0))
    avg = _run(small64, "fedavg")
    torch.testing.assert_close(_flat(dp), _flat(avg), rtol=1e-10, atol=1e-12)
    assert np.isinf(dp.history.epsilon).all() and np.isnan(avg.history.epsilon).all()


def test_no_noise_and_no_clipping_is_the_unweighted_mean(small64):
    """Unequal clients: DP-FedAvg averages with the fixed denominator, not by size."""
    dp = _run(small64, algorithms.get("dp-fedavg", clip_norm=1e4, noise_multiplier=0.0),
              scheme="quantity")
    plain = _run(small64, Algorithm("unweighted", aggregator=lambda u: u.delta.mean(dim=0)),
                 scheme="quantity")
    weighted = _run(small64, "fedavg", scheme="quantity")
    torch.testing.assert_close(_flat(dp), _flat(plain), rtol=1e-10, atol=1e-12)
    assert (_flat(dp) - _flat(weighted)).abs().max() > 1e-4   # and FedAvg's differs


def test_tiny_clip_bounds_every_update_and_the_step(small64):
    seen = []

    def after_clip(updates, ctx):   # runs before DP's clip: record raw, check clip below
        seen.append(updates.delta.norm(dim=1).clone())
        return updates

    alg = algorithms.get("dp-fedavg", clip_norm=1e-3, noise_multiplier=0.0,
                         client_steps=[after_clip])
    sim = _run(small64, alg, rounds=1)
    x1 = _flat(sim)
    sim2 = _run(small64, alg, rounds=2)
    assert (seen[0] > 1e-3).all()                       # the raw updates were larger
    assert float((_flat(sim2) - x1).norm()) <= 1e-3 * (1 + 1e-9)   # the mean of clipped ones is not
    # the client step itself, on real updates
    u = ClientUpdates([0, 1, 2], torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.3, 0.4]]),
                      torch.ones(3), torch.ones(3), torch.zeros(3))
    c = clip_updates(u, 1.0).delta
    assert torch.all(c.norm(dim=1) <= 1.0 + 1e-7)
    torch.testing.assert_close(c[0], torch.tensor([0.6, 0.8]))       # direction kept
    torch.testing.assert_close(c[2], u.delta[2])                      # small ones untouched


def test_in_the_pipeline_no_clipped_update_exceeds_the_clip(small64, monkeypatch):
    """What the clients send under DP: the rows secure aggregation encodes (caught on the
    clients' side, as they enter the masking)."""
    from fedlab_widgets import secagg

    rows, real = [], secagg.secure_sum

    def catch(vectors, *args, **kw):
        rows.append(vectors.clone())
        return real(vectors, *args, **kw)

    monkeypatch.setattr(secagg, "secure_sum", catch)
    sim = _run(small64, algorithms.get("dp-fedavg", clip_norm=1e-3, noise_multiplier=0.0,
                                       secure_aggregation=True), rounds=1)
    view = sim.server_state["secagg"]
    sent = secagg.dequantise(secagg.encode(rows[0]), view.scale)[:, :-1]   # [delta_k, 1] per client
    norms = sent.norm(dim=1)
    assert (norms <= 1e-3 + sent.shape[1] ** 0.5 * 0.5 / view.scale).all()
    assert (norms > 0.9e-3).all()           # the raw updates were far larger: all were clipped


def test_the_noise_has_the_formula_standard_deviation():
    dp = DifferentialPrivacy(clip_norm=0.5, noise_multiplier=1.3)
    ctx = RoundContext(round=4, x=torch.zeros(3), lr=0.1, num_clients=100, total_samples=1,
                       seed=0, clients_per_round=10)
    out = dp.noise(torch.zeros(400_000, dtype=torch.float64), ctx)
    assert abs(float(out.std()) * 10 / (1.3 * 0.5) - 1) < 0.01      # std of the sum: z * S
    assert abs(float(out.mean())) < 3 * 0.065 / math.sqrt(400_000)
    again = dp.noise(torch.zeros(400_000, dtype=torch.float64), ctx)
    assert torch.equal(out, again)                                    # seeded by (seed, round)


def test_the_noise_on_the_global_model_in_a_real_run(small64):
    """lr so small that the updates vanish: the step is the noise over m alone."""
    train, test = small64
    parts = partition(train.labels, "iid", 20, seed=1)
    sim = Simulation(get_model("2nn", seed=0).double(), train, test, parts, lr=1e-12, seed=3,
                     client_fraction=0.25, batch_size=50, eval_every=1000,
                     algorithm=algorithms.get("dp-fedavg", clip_norm=2.0, noise_multiplier=0.7))
    x0 = _flat(sim)
    sim.run(1)
    step = _flat(sim) - x0
    assert abs(float(step.std()) / (0.7 * 2.0 / 5) - 1) < 0.01       # m = 5 clients


@pytest.mark.parametrize("K,m,z,T", [(100, 10, 1.0, 5), (1000, 10, 1.1, 50), (50, 50, 2.0, 3),
                                     (10_000, 100, 0.8, 20)])
def test_epsilon_matches_dp_accounting(K, m, z, T):
    """The reported epsilon against the library's own composition: fixed-size sampling
    without replacement, replace-one, sensitivity 2 * clip_norm."""
    acc = rdp.RdpAccountant(neighboring_relation=dpa.NeighboringRelation.REPLACE_ONE)
    acc.compose(dpa.SampledWithoutReplacementDpEvent(K, m, dpa.GaussianDpEvent(z / 2)), T)
    expected = acc.get_epsilon(1e-5)
    got = DifferentialPrivacy(noise_multiplier=z).epsilon(rounds=T, num_clients=K,
                                                          clients_per_round=m)
    assert got == pytest.approx(expected, rel=0.03)   # the library's default orders differ a little
    assert got >= expected * 0.97


def test_epsilon_in_the_history_grows_per_round_and_is_saved(small64, tmp_path):
    sim = _run(small64, algorithms.get("dp-fedavg", clip_norm=0.5, noise_multiplier=1.0), rounds=3)
    eps = sim.history.epsilon
    assert np.all(np.diff(eps) > 0)
    expected = DifferentialPrivacy(clip_norm=0.5, noise_multiplier=1.0).epsilon(
        rounds=3, num_clients=20, clients_per_round=5)
    assert eps[-1] == pytest.approx(expected)
    assert "epsilon" in sim.history.summary()
    back = History.load(sim.history.save(tmp_path / "h.json"))
    np.testing.assert_allclose(back.epsilon, eps)
    assert back.config["dp_params"]["noise_multiplier"] == 1.0


def test_more_noise_less_epsilon_and_more_rounds_more():
    e = lambda z, T: DifferentialPrivacy(noise_multiplier=z).epsilon(  # noqa: E731
        rounds=T, num_clients=1000, clients_per_round=10)
    assert e(2.0, 100) < e(1.0, 100) < e(1.0, 200)
    assert e(1.0, 0) == 0.0


def test_dp_composes_with_other_averaging_algorithms_and_refuses_the_rest():
    alg = algorithms.get("fedprox", mu=0.1, differential_privacy=True, clip_norm=0.5)
    assert alg.dp.clip_norm == 0.5 and alg.mu == 0.1
    assert "dp(clip_norm=0.5" in alg.label()
    with pytest.raises(ValueError, match="clip_norm applies only with differential_privacy=True"):
        algorithms.get("fedprox", clip_norm=0.5)
    with pytest.raises(ValueError, match="SCAFFOLD"):
        algorithms.get("scaffold", differential_privacy=True)
    with pytest.raises(ValueError, match="mean aggregator only"):
        algorithms.get("fednova", differential_privacy=True)
    with pytest.raises(ValueError, match="mean aggregator only"):
        algorithms.get("dp-fedavg", aggregator="median")
    with pytest.raises(ValueError, match="noise_multiplier must be a number from 0 to 100"):
        algorithms.get("dp-fedavg", noise_multiplier=-1)
    with pytest.raises(ValueError, match="differential_privacy must be True or False"):
        algorithms.get("fedavg", differential_privacy="yes")
