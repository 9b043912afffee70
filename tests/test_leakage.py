"""Gradient inversion on real MNIST digits: labels from the gradient, a digit reconstructed,
the FedAvg update against autograd, and the defences' helpers."""

from __future__ import annotations

import pytest
import torch

from fedlab_widgets import get_model
from fedlab_widgets import leakage as L


@pytest.fixture(scope="module")
def lenet():
    return get_model("lenet", seed=0).double()


def test_idlg_reads_every_label_off_the_gradient(lenet, test_set):
    x, y = L.pixels(test_set, list(range(50)))
    for i in range(50):
        assert L.infer_label(L.client_gradient(lenet, x[i:i + 1], y[i:i + 1])) == int(y[i])


def test_a_digit_comes_back_from_its_gradient(lenet, test_set):
    x, y = L.pixels(test_set, 0)
    grads = L.client_gradient(lenet, x, y)
    steps = []
    images, labels = L.invert_gradients(lenet, grads, seed=0, restarts=4,
                                        callback=lambda s, im: steps.append(im.shape))
    assert labels.tolist() == y.tolist()
    assert float(L.reconstruction_mse(images, x)[0]) < 1e-4
    assert steps and steps[0] == (1, 1, 28, 28)
    # a random image is nowhere near: the measure can fail
    assert float(L.reconstruction_mse(torch.rand_like(x), x)[0]) > 0.05


def test_heavy_noise_stops_the_attack(lenet, test_set):
    x, y = L.pixels(test_set, 0)
    noisy = L.add_noise(L.client_gradient(lenet, x, y), 0.1, seed=0)
    images, _ = L.invert_gradients(lenet, noisy, seed=0, iterations=100)
    assert float(L.reconstruction_mse(images, x)[0]) > 0.05


def test_one_local_step_update_is_the_gradient_and_more_steps_are_not(lenet, test_set):
    x, y = L.pixels(test_set, [0, 1])
    g = L.client_gradient(lenet, x, y)
    one = L.fedavg_update(lenet, x, y, local_steps=1, lr=0.1)
    for a, b in zip(one, g):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    five = L.fedavg_update(lenet, x, y, local_steps=5, lr=0.1)
    assert max(float((a - b).abs().max()) for a, b in zip(five, g)) > 1e-4


def test_defence_helpers(lenet, test_set):
    x, y = L.pixels(test_set, 0)
    g = L.client_gradient(lenet, x, y)
    norm = float(torch.sqrt(sum((t * t).sum() for t in g)))
    c = L.clip(g, norm / 10)
    assert float(torch.sqrt(sum((t * t).sum() for t in c))) == pytest.approx(norm / 10)
    for t, k in zip(L.top_k(g, 0.1), g):
        assert int((t != 0).sum()) <= -(-k.numel() // 10)
    n = L.add_noise([torch.zeros(100_000, dtype=torch.float64)], 0.3, seed=1)[0]
    assert float(n.std()) == pytest.approx(0.3, rel=0.02)


def test_batches_use_dlg_soft_labels(lenet, test_set):
    x, y = L.pixels(test_set, [0, 1])
    images, labels = L.invert_gradients(lenet, L.client_gradient(lenet, x, y), num_images=2,
                                        iterations=3, seed=0)
    assert images.shape == (2, 1, 28, 28) and labels.shape == (2,)


def test_bad_input(lenet, test_set):
    x, y = L.pixels(test_set, 0)
    g = L.client_gradient(lenet, x, y)
    with pytest.raises(ValueError, match="one tensor per model parameter"):
        L.invert_gradients(lenet, g[:-1])
    with pytest.raises(ValueError, match="method must be 'idlg' or 'dlg'"):
        L.invert_gradients(lenet, g, method="fast")
    with pytest.raises(ValueError, match="num_images must be an integer >= 1"):
        L.invert_gradients(lenet, g, num_images=0)
    with pytest.raises(ValueError, match="label must be one label or 2 labels"):
        L.invert_gradients(lenet, g, num_images=2, label=[1, 2, 3])
    with pytest.raises(ValueError, match="fraction must be a number in \\(0, 1\\]"):
        L.top_k(g, 0)
