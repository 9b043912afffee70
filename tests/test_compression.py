"""Compressed updates: top-k and random-k against naive code, QSGD unbiased, honest bytes."""

import math

import numpy as np
import pytest
import torch

from fedlab_widgets import Simulation, algorithms, compression, partition
from fedlab_widgets.algorithms import ClientStore, RoundContext
from fedlab_widgets.compression import qsgd, random_k, top_k
from fedlab_widgets.engines.base import ClientUpdates


def _updates(delta, clients=None):
    m = len(delta)
    return ClientUpdates(list(range(m)) if clients is None else clients, delta,
                         torch.ones(m, dtype=torch.float64), torch.ones(m, dtype=torch.int64),
                         torch.zeros(m, dtype=torch.float64))


def _ctx(r=1, store=None):
    return RoundContext(round=r, x=torch.zeros(1), lr=0.1, num_clients=10, total_samples=10,
                        store=store if store is not None else ClientStore(), seed=3)


def test_top_k_matches_a_naive_sort():
    v = torch.randn(4, 1000, dtype=torch.float64)
    out = top_k(v, 37)
    for i in range(4):
        order = sorted(range(1000), key=lambda j: -abs(float(v[i, j])))[:37]
        ref = torch.zeros(1000, dtype=torch.float64)
        ref[order] = v[i, order]
        assert torch.equal(out[i], ref)


def test_error_feedback_loses_nothing():
    """What was sent over the rounds plus what is still held back equals what was produced."""
    comp = compression.get("topk", fraction=0.05)
    store = ClientStore()
    g = torch.Generator().manual_seed(0)
    produced = torch.zeros(3, 200, dtype=torch.float64)
    sent = torch.zeros(3, 200, dtype=torch.float64)
    for r in range(1, 6):
        d = torch.randn(3, 200, generator=g, dtype=torch.float64)
        produced += d
        out = comp(_updates(d.clone(), [4, 7, 9]), _ctx(r, store))
        assert int((out.delta != 0).sum(1).max()) <= 10
        sent += out.delta
    residual = store.gather("compression_residual", [4, 7, 9], 200, dtype=torch.float64)
    torch.testing.assert_close(sent + residual, produced)
    off = compression.get("topk", fraction=0.05, error_feedback=False)
    store2 = ClientStore()
    off(_updates(torch.randn(3, 200, dtype=torch.float64)), _ctx(1, store2))
    assert len(store2) == 0


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_qsgd_is_unbiased_and_on_its_grid(bits):
    v = torch.randn(2, 300, dtype=torch.float64)
    s = 2 ** (bits - 1) - 1
    n = 3000
    total = torch.zeros_like(v)
    for t in range(n):
        gens = [torch.Generator().manual_seed(1000 * t + i) for i in range(2)]
        q = qsgd(v, bits, 100, gens)
        total += q
        if t == 0:
            for i in range(2):
                for b in range(3):
                    seg, qs = v[i, 100 * b:100 * (b + 1)], q[i, 100 * b:100 * (b + 1)]
                    levels = qs.abs() / seg.norm() * s
                    torch.testing.assert_close(levels, levels.round())
                    assert bool((torch.sign(qs) * torch.sign(seg) >= 0).all())
    # the mean of n draws is within a few standard errors of v
    err = (total / n - v).abs().max()
    assert float(err) < 6 * float(v.abs().max()) / math.sqrt(n) * (1 if bits > 2 else 3)


def test_random_k_is_unbiased_and_sends_k():
    v = torch.randn(1, 50, dtype=torch.float64)
    total = torch.zeros_like(v)
    for t in range(4000):
        out = random_k(v, 5, [torch.Generator().manual_seed(t)])
        assert int((out != 0).sum()) == 5
        total += out
    torch.testing.assert_close(total / 4000, v, atol=0.35 * float(v.abs().max()), rtol=0)
    unscaled = random_k(v, 5, [torch.Generator().manual_seed(0)], scale=False)
    nz = unscaled != 0
    assert torch.equal(unscaled[nz], v[nz])


def test_bytes_are_what_is_sent():
    d = 199_210
    assert compression.get("topk", fraction=0.01).bytes_up(d) == 1993 * 8
    assert compression.get("randk", fraction=0.1).bytes_up(d) == 19921 * 4 + 8
    assert compression.get("quantize", bits=2).bytes_up(d) == math.ceil(d * 2 / 8) + 4 * 390
    assert compression.get("quantize", bits=8, bucket_size=d).bytes_up(d) == d + 4


@pytest.mark.parametrize("call,msg", [
    (lambda: compression.get("gzip"), "compression must be one of topk, randk, quantize"),
    (lambda: compression.get("topk", fraction=0), "fraction must be a number in \\(0, 1\\]"),
    (lambda: compression.get("quantize", bits=1), "bits must be an integer from 2 to 16"),
    (lambda: compression.get("quantize", bits=8.5), "bits"),
    (lambda: compression.get("topk", k=5), "unknown parameter.*k.*fraction"),
    (lambda: compression.get("topk", error_feedback="yes"), "error_feedback"),
])
def test_bad_compression_names_the_parameter(call, msg):
    with pytest.raises(ValueError, match=msg):
        call()


def test_refused_combinations(train, test_set):
    parts = partition(train.labels, "iid", 10, seed=0)
    with pytest.raises(ValueError, match="secure aggregation"):
        Simulation("2nn", train, test_set, parts, compression="topk",
                   algorithm=algorithms.get("fedavg", secure_aggregation=True))
    with pytest.raises(ValueError, match="SCAFFOLD"):
        Simulation("2nn", train, test_set, parts, compression="quantize", algorithm="scaffold")
    with pytest.raises(ValueError, match="compression must be"):
        Simulation("2nn", train, test_set, parts, compression=0.1)


def test_compressed_training_learns_and_counts_bytes(train, test_set):
    parts = partition(train.labels, "iid", 100, seed=0)
    kw = dict(client_fraction=0.1, lr=0.1, seed=0, eval_every=5)
    base = Simulation("2nn", train, test_set, parts, **kw).run(5)
    q8 = Simulation("2nn", train, test_set, parts, compression=compression.get("quantize", bits=8),
                    **kw).run(5)
    top = Simulation("2nn", train, test_set, parts, compression=compression.get("topk", fraction=0.01),
                     **kw).run(5)
    assert abs(q8.final_accuracy - base.final_accuracy) < 0.01
    assert top.final_accuracy > 0.85
    d = 199_210
    assert top.bytes_up[0] == 10 * 1993 * 8 and top.bytes_down[0] == 10 * d * 4
    assert q8.bytes_up[0] == 10 * (d + 4 * 390)
    assert q8.config["compression"] == "quantize" and "8-bit" not in q8.label
    assert "quantize(bits=8)" in q8.label


def test_same_seed_same_compressed_history(train, test_set):
    parts = partition(train.labels, "iid", 50, seed=0)
    runs = [Simulation("2nn", train, test_set, parts, client_fraction=0.1, seed=2, eval_every=10,
                       compression=compression.get("randk", fraction=0.1)).run(2)
            for _ in range(2)]
    np.testing.assert_array_equal(runs[0].accuracy, runs[1].accuracy)
