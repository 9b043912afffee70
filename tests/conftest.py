"""Shared fixtures: the real MNIST, loaded once per test session."""

import matplotlib

matplotlib.use("Agg")  # headless: tests never open windows

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
