"""fedlab-widgets: learn federated learning by doing, on MNIST, on a laptop CPU.

The package holds the machinery; the notebooks in ``notebooks/`` hold the ideas.

>>> from fedlab_widgets import load_mnist, partition, Simulation
>>> train, test = load_mnist()
>>> parts = partition(train.labels, "dirichlet", 100, alpha=0.3, seed=0)
>>> history = Simulation("2nn", train, test, parts, lr=0.05).run(5)  # doctest: +SKIP
>>> scaffold = Simulation("2nn", train, test, parts, algorithm="scaffold")  # doctest: +SKIP
"""

from . import algorithms, attacks, compression
from .algorithms import Algorithm
from .datasets import DatasetNotFoundError, FederatedDataset, load_fashion_mnist, load_mnist
from .history import History, RoundRecord
from .models import CNN, SmallCNN, TwoNN, count_parameters, get_model
from .partition import SCHEMES, Partition, partition
from .simulation import Simulation, evaluate

__version__ = "0.1.0"

__all__ = [
    "load_mnist", "load_fashion_mnist", "FederatedDataset", "DatasetNotFoundError",
    "partition", "Partition", "SCHEMES",
    "get_model", "TwoNN", "CNN", "SmallCNN", "count_parameters",
    "Simulation", "History", "RoundRecord", "evaluate", "algorithms", "Algorithm", "attacks",
    "compression",
]


def __getattr__(name):
    # The widgets pull in ipywidgets and matplotlib: import them only when asked for,
    # so that headless use (CLI, scripts, tests) stays light.
    if name in ("PartitionExplorer", "FedAvgDashboard"):
        from . import widgets

        return getattr(widgets, name)
    raise AttributeError(f"module 'fedlab_widgets' has no attribute {name!r}")
