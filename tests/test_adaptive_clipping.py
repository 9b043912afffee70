"""Adaptive clipping (Andrew, Thakkar, McMahan & Ramaswamy 2021; issue 24): the geometric update
and the noise split against the paper's formulas, the clip norm finding its target quantile of
the update norms, and the accountant charging the count's noise."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedlab_widgets import Simulation, algorithms, partition
from fedlab_widgets.algorithms import DifferentialPrivacy


def test_the_geometric_update_and_the_noise_split_are_the_papers():
    dp = DifferentialPrivacy(clip_norm=1.0, noise_multiplier=1.0, adaptive_clipping=True,
                             target_quantile=0.7, clip_lr=0.2)
    # C <- C exp(-eta (b - gamma)), b the unclipped share
    assert dp.next_clip(2.0, 5, 10) == pytest.approx(2.0 * math.exp(-0.2 * (0.5 - 0.7)), rel=1e-15)
    assert dp.next_clip(2.0, 7, 10) == pytest.approx(2.0)
    # Theorem 1: (z_Delta^-2 + (2 sigma_b)^-2)^(-1/2) = z, sigma_b = m / 20 by default
    m = 100
    zd, sb = dp.update_noise_multiplier(m), dp.count_std(m)
    assert sb == 5.0 and zd > 1.0
    assert (zd ** -2 + (2 * sb) ** -2) ** -0.5 == pytest.approx(1.0, rel=1e-12)
    fixed = DifferentialPrivacy(clip_norm=1.0, noise_multiplier=1.0)
    assert fixed.update_noise_multiplier(m) == 1.0 and "adaptive_clipping" not in fixed.params
    # the accountant charges z for the pair (sum, count): the same epsilon as a fixed clip
    assert dp.epsilon(rounds=50, num_clients=1000, clients_per_round=m) == \
        fixed.epsilon(rounds=50, num_clients=1000, clients_per_round=m)


def test_a_count_noise_too_small_for_the_budget_is_refused():
    with pytest.raises(ValueError, match="count_noise must be more than noise_multiplier / 2 = 0.5"):
        DifferentialPrivacy(noise_multiplier=1.0, adaptive_clipping=True, count_noise=0.5)
    dp = DifferentialPrivacy(noise_multiplier=1.0, adaptive_clipping=True)
    with pytest.raises(ValueError, match="m / 20 with m = 10: raise count_noise"):
        dp.update_noise_multiplier(10)
    with pytest.raises(ValueError, match="target_quantile must be a number from 0 to 1"):
        algorithms.get("dp-fedavg", adaptive_clipping=True, target_quantile=1.5)


@pytest.mark.parametrize("quantile", [0.3, 0.7])
def test_the_clip_norm_follows_its_target_quantile_of_the_update_norms(train, test_set, quantile):
    small = train.subset(torch.arange(6000))
    parts = partition(small.labels, "iid", 100, seed=0)
    alg = algorithms.get("dp-fedavg", clip_norm=5.0, noise_multiplier=0.5, adaptive_clipping=True,
                         target_quantile=quantile, clip_lr=0.5)
    sim = Simulation("logreg", small, test_set.subset(torch.arange(500)), parts, client_fraction=0.4,
                     batch_size=20, lr=0.1, algorithm=alg, seed=0, eval_every=100)
    sim.run(60)
    clips = np.array(sim.server_state["dp_clip_norms"])
    shares = np.array(sim.server_state["dp_unclipped_shares"])
    assert len(clips) == 60 and clips[0] == 5.0 and clips[-1] < 5.0    # it moved from the start
    # the share of unclipped updates settles at the target (noisy count, averaged), so the share
    # clipped at 1 - quantile
    assert abs(shares[-30:].mean() - quantile) < 0.1, shares[-30:].mean()
    # every round's update follows the formula from the noisy share it measured
    dp = alg.dp
    for c, b, nxt in zip(clips[:-1], shares[:-1], clips[1:]):
        assert nxt == pytest.approx(c * math.exp(-dp.clip_lr * (b - quantile)), rel=1e-12)
    eps = sim.history.records[-1].epsilon
    assert eps == pytest.approx(dp.epsilon(rounds=60, num_clients=100, clients_per_round=40))


def test_a_lower_target_gives_a_lower_clip_norm(train, test_set):
    small = train.subset(torch.arange(3000))
    parts = partition(small.labels, "iid", 50, seed=0)
    last = {}
    for q in (0.2, 0.8):
        alg = algorithms.get("dp-fedavg", clip_norm=1.0, noise_multiplier=0.0, adaptive_clipping=True,
                             target_quantile=q, clip_lr=0.5)
        sim = Simulation("logreg", small, test_set.subset(torch.arange(200)), parts, client_fraction=0.5,
                         batch_size=20, lr=0.1, algorithm=alg, seed=0, eval_every=100)
        sim.run(30)
        last[q] = sim.server_state["dp_clip_norms"][-1]
    assert last[0.2] < last[0.8]


def test_the_flower_export_refuses_adaptive_clipping_with_its_reason(train, test_set, tmp_path):
    from fedlab_widgets.flower.export import check_exportable
    small = train.subset(torch.arange(500))
    sim = Simulation("logreg", small, test_set.subset(torch.arange(100)), partition(small.labels, "iid", 40, seed=0),
                     client_fraction=0.5, algorithm=algorithms.get("dp-fedavg", noise_multiplier=0.5,
                                                                   adaptive_clipping=True))
    with pytest.raises(ValueError, match="adaptive clipping needs each client's clipped-or-not bit"):
        check_exportable(sim)
