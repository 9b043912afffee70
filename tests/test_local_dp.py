"""Local DP (issue 24): each client clips and noises its own update, as Flower's ``LocalDpMod``
does; its epsilon (no amplification by sampling) from dp-accounting; the calibration that puts
local and central DP at the same epsilon; the clip norm and clipped share in every DP record."""

from __future__ import annotations

import dataclasses
import math

import dp_accounting as dpa
import numpy as np
import pytest
import torch

from fedlab_widgets import History, Simulation, algorithms, get_model, partition
from fedlab_widgets.algorithms import DifferentialPrivacy
from fedlab_widgets.algorithms.context import RoundContext
from fedlab_widgets.algorithms.privacy import noise_for_epsilon
from fedlab_widgets.engines.base import ClientUpdates


def _updates(m=200, d=50, scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    delta = scale * torch.randn(m, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    return ClientUpdates(list(range(m)), delta, torch.ones(m, dtype=torch.float64),
                         torch.ones(m, dtype=torch.float64), torch.zeros(m, dtype=torch.float64))


def _ctx(m):
    return RoundContext(round=1, x=torch.zeros(50, dtype=torch.float64), lr=0.1, num_clients=10 * m,
                        total_samples=10 * m, seed=7, clients_per_round=m)


def test_the_local_mechanism_is_flowers_local_dp_mod():
    """Flower's LocalDpMod clips ``x_k - x`` to the clipping norm, then adds N(0, s^2) with
    ``s = sensitivity sqrt(2 ln(1.25 / delta)) / epsilon`` to every coordinate. Ours, with the
    noise multiplier that gives the same s, clips the same and noises with the same spread."""
    from flwr.supercore.differential_privacy import compute_clip_model_update
    clip, sens, eps, delta = 0.5, 1.0, 2.0, 1e-5
    s = sens * math.sqrt(2 * math.log(1.25 / delta)) / eps
    u = _updates()
    x = np.zeros(u.delta.shape[1])
    theirs = []
    for row in u.delta.numpy():
        p = [row.copy()]
        compute_clip_model_update(p, [x], clip)
        theirs.append(p[0])
    quiet = DifferentialPrivacy(clip_norm=clip, noise_multiplier=0.0, local_dp=True)
    np.testing.assert_allclose(quiet.clip(u, _ctx(len(u.delta))).delta.numpy(), np.stack(theirs),
                               rtol=1e-12, atol=1e-12)
    noisy = DifferentialPrivacy(clip_norm=clip, noise_multiplier=s / clip, local_dp=True)
    noise = noisy.clip(u, _ctx(len(u.delta))).delta - quiet.clip(u, _ctx(len(u.delta))).delta
    assert float(noise.std()) == pytest.approx(s, rel=0.03)
    assert abs(float(noise.mean())) < 4 * s / math.sqrt(noise.numel())


def test_local_noise_on_the_mean_is_sqrt_m_times_central():
    m, z, clip = 200, 1.0, 1.0
    zero = _updates(m=m, scale=0.0)
    spreads = {}
    for local in (False, True):
        dp = DifferentialPrivacy(clip_norm=clip, noise_multiplier=z, local_dp=local)
        ctx = _ctx(m)
        mean = dp.noise(dp.sum(dp.clip(zero, ctx)), ctx)
        spreads[local] = float(mean.std())
    assert spreads[False] == pytest.approx(z * clip / m, rel=0.25)
    assert spreads[True] == pytest.approx(z * clip / math.sqrt(m), rel=0.25)


def test_local_epsilon_is_the_composition_of_a_clients_reports_and_exceeds_central():
    dp = DifferentialPrivacy(noise_multiplier=2.0, local_dp=True, delta=1e-5)
    acc = dpa.rdp.RdpAccountant(neighboring_relation=dpa.NeighboringRelation.REPLACE_ONE)
    acc.compose(dpa.GaussianDpEvent(1.0), 30)
    assert dp.epsilon(rounds=30, num_clients=100, clients_per_round=10) == pytest.approx(
        acc.get_epsilon(1e-5), rel=0.02)
    central = DifferentialPrivacy(noise_multiplier=2.0).epsilon(rounds=30, num_clients=100,
                                                                 clients_per_round=10)
    assert central < dp.epsilon(rounds=30, num_clients=100, clients_per_round=10)


def test_noise_for_epsilon_meets_the_target_from_below():
    for local in (True, False):
        z = noise_for_epsilon(4.0, rounds=10, num_clients=100, clients_per_round=10, local_dp=local)
        e = DifferentialPrivacy(noise_multiplier=z, local_dp=local).epsilon(
            rounds=10, num_clients=100, clients_per_round=10)
        assert 3.9 < e <= 4.0 + 1e-6, (local, z, e)
    with pytest.raises(ValueError, match="epsilon must be"):
        noise_for_epsilon(0.0, rounds=10, num_clients=100, clients_per_round=10)


def test_local_dp_refuses_adaptive_clipping_and_is_in_the_config():
    with pytest.raises(ValueError, match="adaptive_clipping cannot be combined with local_dp"):
        algorithms.get("dp-fedavg", local_dp=True, adaptive_clipping=True)
    with pytest.raises(ValueError, match="local_dp must be True or False"):
        algorithms.get("dp-fedavg", local_dp="yes")
    assert algorithms.get("dp-fedavg", local_dp=True).dp.params["local_dp"] is True
    assert "local_dp" not in algorithms.get("dp-fedavg").dp.params


def test_local_dp_is_the_same_on_both_engines_in_float64(train, test_set, tmp_path):
    small = dataclasses.replace(train, images=train.images[:3000].double(), labels=train.labels[:3000])
    test = dataclasses.replace(test_set, images=test_set.images[:500].double(), labels=test_set.labels[:500])
    parts = partition(small.labels, "iid", 30, seed=0)
    out = {}
    for engine in ("sequential", "vectorized"):
        sim = Simulation(get_model("2nn", seed=0).double(), small, test, parts, client_fraction=0.2,
                         batch_size=10, lr=0.1, seed=1, engine=engine,
                         algorithm=algorithms.get("dp-fedavg", clip_norm=0.5, noise_multiplier=1.0,
                                                  local_dp=True))
        h = sim.run(3)
        out[engine] = (torch.cat([p.flatten() for p in sim.global_model.parameters()]), h)
    torch.testing.assert_close(out["vectorized"][0], out["sequential"][0], rtol=1e-10, atol=1e-12)
    h = out["sequential"][1]
    assert np.all(h.clip_norm == 0.5) and np.all((h.clipped >= 0) & (h.clipped <= 1))
    back = History.load(h.save(tmp_path / "h.json"))
    np.testing.assert_array_equal(back.clip_norm, h.clip_norm)
    np.testing.assert_array_equal(back.clipped, h.clipped)
    assert back.config["dp_params"]["local_dp"] is True


def test_at_equal_epsilon_central_dp_learns_and_local_dp_does_not(train, test_set):
    parts = partition(train.labels, "iid", 100, seed=0)
    central = algorithms.get("dp-fedavg", clip_norm=0.5, noise_multiplier=1.0)
    eps = central.epsilon(10, 100, 10)
    z_local = noise_for_epsilon(eps, rounds=10, num_clients=100, clients_per_round=10, local_dp=True)
    acc = {}
    for name, alg in (("central", central),
                      ("local", algorithms.get("dp-fedavg", clip_norm=0.5, noise_multiplier=z_local,
                                               local_dp=True))):
        sim = Simulation("logreg", train, test_set, parts, client_fraction=0.1, batch_size=10,
                         lr=0.1, seed=0, eval_every=10, algorithm=alg)
        h = sim.run(10)
        acc[name] = h.final_accuracy
        assert h.epsilon[-1] == pytest.approx(eps, rel=1e-3)
    assert acc["central"] > 0.7 and acc["local"] < acc["central"] - 0.2, acc


def test_the_flower_export_refuses_local_dp_with_its_reason(train, test_set):
    from fedlab_widgets.flower.export import check_exportable
    small = train.subset(torch.arange(500))
    sim = Simulation("logreg", small, test_set.subset(torch.arange(100)),
                     partition(small.labels, "iid", 40, seed=0), client_fraction=0.5,
                     algorithm=algorithms.get("dp-fedavg", noise_multiplier=0.5, local_dp=True))
    with pytest.raises(ValueError, match="local DP's noise must be added on each client"):
        check_exportable(sim)
