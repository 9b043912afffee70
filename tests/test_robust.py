"""Robust aggregators against straightforward numpy references, on random tensors,
with ties and at the smallest valid number of clients."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from fedlab_widgets import Simulation, algorithms, partition
from fedlab_widgets.algorithms import krum, median, multikrum, norm_clip, trimmed_mean
from fedlab_widgets.engines import ClientUpdates


def _updates(delta, weight=None):
    delta = torch.as_tensor(delta, dtype=torch.float64)
    m = len(delta)
    w = torch.ones(m, dtype=torch.float64) if weight is None else torch.as_tensor(weight, dtype=torch.float64)
    return ClientUpdates(list(range(m)), delta, w, torch.ones(m, dtype=torch.int64),
                         torch.zeros(m, dtype=torch.float64))


# -- naive references: loops over coordinates and pairs, numpy only -----------------------------
def ref_median(d):
    return np.array([np.median(d[:, j]) for j in range(d.shape[1])])


def ref_trimmed_mean(d, beta):
    m = d.shape[0]
    b = int(np.floor(beta * m))
    return np.array([np.mean(sorted(d[:, j])[b:m - b]) for j in range(d.shape[1])])


def ref_krum_scores(d, f):
    m = d.shape[0]
    scores = []
    for i in range(m):
        dists = sorted(float(np.sum((d[i] - d[j]) ** 2)) for j in range(m) if j != i)
        scores.append(sum(dists[:m - f - 2]))
    return np.array(scores)


def ref_krum(d, f):
    return d[int(np.argmin(ref_krum_scores(d, f)))]


def ref_multikrum(d, f):
    s = ref_krum_scores(d, f)
    keep = sorted(range(len(s)), key=lambda i: (s[i], i))[:len(s) - f]
    return d[keep].mean(0)


def ref_norm_clip(d, w, c):
    out = np.zeros(d.shape[1])
    for di, wi in zip(d, w):
        out += wi / np.sum(w) * di * min(1.0, c / np.linalg.norm(di))
    return out


CASES = list(itertools.product([3, 4, 7, 10], [0, 1, 2]))


@pytest.mark.parametrize("m,seed", CASES)
def test_against_numpy_references_on_random_tensors(m, seed):
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(m, 13)) * rng.uniform(0.1, 10, size=(m, 1))
    w = rng.integers(1, 100, size=m).astype(float)
    u = _updates(d, w)
    np.testing.assert_allclose(median(u).numpy(), ref_median(d), rtol=1e-12)
    for beta in (0.0, 0.1, 0.25, 0.4):
        np.testing.assert_allclose(trimmed_mean(u, trim_ratio=beta).numpy(), ref_trimmed_mean(d, beta),
                                   rtol=1e-12)
    for f in range(0, (m - 3) // 2 + 1):   # every f with m >= 2f + 3, the smallest valid m included
        np.testing.assert_allclose(krum(u, num_byzantine=f).numpy(), ref_krum(d, f), rtol=1e-12)
        np.testing.assert_allclose(multikrum(u, num_byzantine=f).numpy(), ref_multikrum(d, f),
                                   rtol=1e-10)
    for c in (0.01, 1.0, 1e6):
        np.testing.assert_allclose(norm_clip(u, max_norm=c).numpy(), ref_norm_clip(d, w, c), rtol=1e-10)


def test_ties_and_duplicates():
    d = np.array([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [5.0, -1.0], [5.0, -1.0]])
    u = _updates(d)
    np.testing.assert_array_equal(median(u).numpy(), [1.0, 2.0])
    np.testing.assert_array_equal(krum(u, num_byzantine=1).numpy(), ref_krum(d, 1))
    np.testing.assert_array_equal(krum(u, num_byzantine=1).numpy(), [1.0, 2.0])  # the earlier row wins
    same = _updates(np.ones((5, 3)))
    assert torch.equal(krum(same, num_byzantine=1), torch.ones(3, dtype=torch.float64))
    np.testing.assert_array_equal(multikrum(same, num_byzantine=1).numpy(), np.ones(3))
    np.testing.assert_array_equal(median(_updates([[1.0], [3.0]])).numpy(), [2.0])  # even count
    zero = _updates(np.zeros((3, 2)))
    assert torch.equal(norm_clip(zero, max_norm=1.0), torch.zeros(2, dtype=torch.float64))


def test_robust_aggregators_resist_one_huge_liar():
    rng = np.random.default_rng(0)
    honest = rng.normal(1.0, 0.1, size=(9, 20))
    d = np.vstack([honest, np.full((1, 20), -1e6)])
    u = _updates(d)
    mean = d.mean(0)
    assert mean.max() < -1e4                       # the mean is dragged away
    for agg in (median(u), trimmed_mean(u, trim_ratio=0.1), krum(u, num_byzantine=1),
                multikrum(u, num_byzantine=1)):
        assert np.abs(agg.numpy() - 1.0).max() < 0.5
    assert np.linalg.norm(norm_clip(u, max_norm=1.0).numpy()) <= 1.0 + 1e-12


def test_algorithm_names_and_validation(train, test_set):
    alg = algorithms.get("fedavg", aggregator="trimmed_mean", trim_ratio=0.2)
    assert alg.label() == "fedavg(aggregator=trimmed_mean, trim_ratio=0.2)"
    assert alg.config()["aggregator_params"] == {"trim_ratio": 0.2}
    with pytest.raises(ValueError, match=r"trim_ratio must be a number in \[0, 0.5\)"):
        algorithms.get("fedavg", aggregator="trimmed_mean", trim_ratio=0.5)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) trim_ratio for algorithm 'fedavg' "
                                         r"with aggregator 'median'"):
        algorithms.get("fedavg", aggregator="median", trim_ratio=0.1)
    parts = partition(train.labels, "iid", 20, seed=0)
    with pytest.raises(ValueError, match=r"krum with num_byzantine=2 needs at least 2 \* 2 \+ 3 = 7 "
                                         r"clients per round; got 4"):
        Simulation("2nn", train, test_set, parts, client_fraction=0.2,
                   algorithm=algorithms.get("fedavg", aggregator="krum", num_byzantine=2))
    # and any algorithm but fednova takes them
    sim = Simulation("2nn", train, test_set, parts, client_fraction=0.35, batch_size=50, eval_every=10,
                     algorithm=algorithms.get("scaffold", aggregator="median"))
    assert sim.run(2).final_accuracy > 0.5
