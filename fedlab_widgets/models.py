"""The models of McMahan et al. (2017) for MNIST, and a small CNN for live demos.

=============  ==========================================================  ==========
name           architecture                                                parameters
=============  ==========================================================  ==========
``"2nn"``      784-200-200-10 multilayer perceptron, ReLU                     199,210
``"cnn"``      5x5 conv 32, 2x2 max-pool, 5x5 conv 64, 2x2 max-pool,        1,663,370
               fully connected 512 (ReLU), output 10; "same" padding
``"small_cnn"`` 5x5 conv 8, pool, 5x5 conv 16, pool, fully connected 64,      54,314
               output 10: ~30x cheaper than ``"cnn"``, ~99% on MNIST
``"logreg"``   multinomial logistic regression, 784 -> 10                     7,850
``"lenet"``    the LeNet of the gradient-leakage papers (Zhu et al. 2019;    13,426
               Zhao et al. 2020): three 5x5 convs of 12 channels (strides
               2, 2, 1), sigmoid activations, fully connected 588 -> 10,
               weights uniform in [-0.5, 0.5] as in their code
=============  ==========================================================  ==========
"""

from __future__ import annotations

import copy
import threading

import torch
from torch import nn

from .registry import Registry

__all__ = ["TwoNN", "CNN", "SmallCNN", "LogReg", "LeNet", "get_model", "as_model", "MODELS", "count_parameters"]


class TwoNN(nn.Module):
    """McMahan et al.'s "2NN": two hidden layers of 200 ReLU units (199,210 parameters)."""

    def __init__(self, in_features: int = 784, hidden: int = 200, num_classes: int = 10):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class CNN(nn.Module):
    """McMahan et al.'s MNIST CNN (1,663,370 parameters)."""

    def __init__(self, num_classes: int = 10, channels: tuple[int, int] = (32, 64), hidden: int = 512):
        super().__init__()
        c1, c2 = channels
        self.conv1 = nn.Conv2d(1, c1, 5, padding=2)
        self.conv2 = nn.Conv2d(c1, c2, 5, padding=2)
        self.fc1 = nn.Linear(c2 * 7 * 7, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)
        if torch.backends.mkldnn.is_available():
            # oneDNN's CPU convolutions are ~25% faster, training and evaluating, when the
            # weights are channels-last (measured on this CNN); the values are the same up to
            # float rounding, and copies (deepcopy, load_state_dict) keep the layout
            self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class SmallCNN(CNN):
    """The same shape as :class:`CNN` with 8 and 16 channels and 64 hidden units."""

    def __init__(self, num_classes: int = 10):
        super().__init__(num_classes, channels=(8, 16), hidden=64)


class LogReg(nn.Module):
    """Multinomial logistic regression: one linear layer 784 -> 10 (7,850 parameters)."""

    def __init__(self, in_features: int = 784, num_classes: int = 10):
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


class LeNet(nn.Module):
    """The LeNet of DLG and iDLG, for 1x28x28 images (13,426 parameters).

    Sigmoid activations (twice differentiable, as gradient matching needs) and the
    papers' initialisation: every weight and bias uniform in [-0.5, 0.5].
    """

    def __init__(self, num_classes: int = 10, channels: int = 12):
        super().__init__()
        c = channels
        self.body = nn.Sequential(
            nn.Conv2d(1, c, 5, padding=2, stride=2), nn.Sigmoid(),
            nn.Conv2d(c, c, 5, padding=2, stride=2), nn.Sigmoid(),
            nn.Conv2d(c, c, 5, padding=2, stride=1), nn.Sigmoid())
        self.fc = nn.Linear(c * 7 * 7, num_classes)
        for p in self.parameters():
            nn.init.uniform_(p, -0.5, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).flatten(1))


_SEEDED_BUILD = threading.Lock()

#: the models by name (a :class:`~fedlab_widgets.registry.Registry`: ``MODELS["2nn"]`` is the class)
MODELS = Registry("model")
MODELS.add("2nn", TwoNN, doc="McMahan et al.'s 2NN: 784-200-200-10, ReLU (199,210 parameters)")
MODELS.add("cnn", CNN, doc="McMahan et al.'s CNN: two 5x5 conv layers, 512 units (1,663,370)")
MODELS.add("small_cnn", SmallCNN, doc="a smaller CNN for live demos")
MODELS.add("logreg", LogReg, doc="multinomial logistic regression (7,850 parameters)")
MODELS.add("lenet", LeNet, doc="the gradient-leakage papers' sigmoid LeNet (13,426)")
#: the models a federation trains (lenet is the gradient-inversion lessons' model)
TRAINABLE_MODELS = ("2nn", "cnn", "small_cnn", "logreg")


def get_model(name: str, *, seed: int | None = None) -> nn.Module:
    """Build a model by name.

    Parameters
    ----------
    name : {"2nn", "cnn", "small_cnn", "logreg", "lenet"}
    seed : int, optional
        Seed for the initial weights; the same seed gives the same weights.

    Examples
    --------
    >>> from fedlab_widgets import get_model
    >>> count_parameters(get_model("2nn"))
    199210
    """
    key = str(name).lower().replace("-", "_")
    if key not in MODELS:
        MODELS.check(name)
    if seed is None:
        return MODELS[key]()
    # torch initialises layers from its global generator: seed it, build, restore, one
    # thread at a time (two dashboards started together must not mix their draws)
    with _SEEDED_BUILD, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODELS[key]()


def as_model(model, *, seed: int | None = None) -> tuple[nn.Module, str]:
    """A fresh module and its name from a model name or a module.

    A name builds :func:`get_model` ``(name, seed=seed)``; a module is deep-copied
    (the caller's module is never modified). Returns ``(module, name)``.
    """
    if isinstance(model, str):
        return get_model(model, seed=seed), model
    if isinstance(model, nn.Module):
        return copy.deepcopy(model), type(model).__name__
    raise ValueError(f"model must be a model name or a torch.nn.Module; got {model!r}")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
