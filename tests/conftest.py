"""Shared fixtures: the real MNIST, loaded once per test session."""

import matplotlib

matplotlib.use("Agg")  # headless: tests never open windows

import dataclasses  # noqa: E402

import pytest  # noqa: E402

from fedlab_widgets import load_mnist  # noqa: E402


@pytest.fixture(scope="session")
def mnist():
    """(train, test) real MNIST; fails with the loader's message if the files are missing."""
    return load_mnist()


@pytest.fixture(scope="session")
def train(mnist):
    return mnist[0]


@pytest.fixture(scope="session")
def test_set(mnist):
    return mnist[1]


@pytest.fixture(scope="session")
def small64(train, test_set):
    """The first 12,000 training and 1,000 test images, in float64: where the engines agree
    to rounding, so that algorithms can be compared across engines with tight tolerances."""
    n = 12000
    tr = dataclasses.replace(train, images=train.images[:n].double().contiguous(),
                             labels=train.labels[:n].clone())
    te = dataclasses.replace(test_set, images=test_set.images[:1000].double().contiguous(),
                             labels=test_set.labels[:1000].clone())
    return tr, te
