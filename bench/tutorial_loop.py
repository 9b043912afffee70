"""FedAvg written the way most tutorials write it: the baseline for ``round_speed.py``.

Nothing here is wrong, and nothing is tuned: torchvision's ``MNIST`` with a
``ToTensor() + Normalize()`` transform applied to every image every time it is
read, one ``DataLoader(Subset(...), shuffle=True)`` per client, a
``copy.deepcopy`` of the global model per sampled client, ``torch.optim.SGD``,
``state_dict`` averaging weighted by sample counts, and a ``DataLoader`` over the
test set for evaluation. The partition (``fedlab_widgets.partition``) and the model
classes (``fedlab_widgets.get_model``) are the package's, so that the only
difference from ``Simulation`` is how the loop is written; but their weights are
put back in PyTorch's default memory layout (see :func:`tutorial_model`).

Usage::

    export FEDLAB_DATA_DIR=/work/shared/data FEDLAB_OFFLINE=1
    python bench/tutorial_loop.py --model 2nn --rounds 5
"""

from __future__ import annotations

import argparse
import copy
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

from fedlab_widgets import get_model, partition

__all__ = ["load_datasets", "make_client_loaders", "client_update", "fed_avg", "test",
           "run_round", "TutorialFedAvg"]

# The usual MNIST normalisation constants found in tutorials.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
TEST_BATCH_SIZE = 1000


def load_datasets(root: str | None = None):
    """torchvision MNIST train and test sets with the tutorial transform."""
    root = root or os.environ.get("FEDLAB_DATA_DIR", "./data")
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))])
    # download=False: the benchmark machine is offline; the files are under root/MNIST/raw
    train = datasets.MNIST(root, train=True, download=False, transform=tf)
    test = datasets.MNIST(root, train=False, download=False, transform=tf)
    return train, test


def make_client_loaders(train_set, parts, batch_size: int) -> list[DataLoader]:
    """One shuffled DataLoader per client over its ``Subset`` of the training set."""
    return [DataLoader(Subset(train_set, ix.tolist()), batch_size=batch_size, shuffle=True)
            for ix in parts.client_indices]


def client_update(global_model: torch.nn.Module, loader: DataLoader, epochs: int, lr: float):
    """Train a deep copy of the global model locally; return its state_dict and sample count."""
    model = copy.deepcopy(global_model)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(epochs):
        for images, labels in loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(images), labels)
            loss.backward()
            optimizer.step()
    return model.state_dict(), len(loader.dataset)


def fed_avg(states: list[dict], sizes: list[int]) -> dict:
    """The average of the client state_dicts weighted by their sample counts."""
    total = sum(sizes)
    return {key: sum(s[key] * (n / total) for s, n in zip(states, sizes)) for key in states[0]}


@torch.no_grad()
def test(model: torch.nn.Module, loader: DataLoader) -> tuple[float, float]:
    """Accuracy and mean cross-entropy loss on ``loader``."""
    model.eval()
    correct, loss, n = 0, 0.0, 0
    for images, labels in loader:
        out = model(images)
        loss += F.cross_entropy(out, labels, reduction="sum").item()
        correct += (out.argmax(1) == labels).sum().item()
        n += len(labels)
    return correct / n, loss / n


def tutorial_model(name: str, seed: int = 0) -> torch.nn.Module:
    """The package's model in PyTorch's default (NCHW) weight layout.

    A model class written in a tutorial has that layout; the package's CNNs keep their
    convolution weights channels-last, one of the package's own optimisations, which
    the baselines should not get for free.
    """
    return get_model(name, seed=seed).to(memory_format=torch.contiguous_format)


def run_round(global_model: torch.nn.Module, client_loaders: list[DataLoader],
              clients_per_round: int, local_epochs: int, lr: float,
              rng: np.random.Generator) -> int:
    """One FedAvg round, in place on ``global_model``; returns the training samples used.

    Samples ``clients_per_round`` clients without replacement, trains each on a
    copy of the global model, and loads the weighted average back into it.
    """
    clients = rng.choice(len(client_loaders), clients_per_round, replace=False)
    states, sizes = [], []
    for k in clients:
        state, n = client_update(global_model, client_loaders[k], local_epochs, lr)
        states.append(state)
        sizes.append(n)
    global_model.load_state_dict(fed_avg(states, sizes))
    return local_epochs * sum(sizes)


class TutorialFedAvg:
    """The tutorial loop packaged for the benchmark: set up once, then ``step()`` per round.

    Parameters
    ----------
    model : {"2nn", "cnn", "small_cnn"}
    parts : Partition
        From :func:`fedlab_widgets.partition` on the training labels.
    client_fraction, local_epochs, batch_size, lr, seed
        C, E, B, the client learning rate and the seed of the initial weights and
        of client sampling.
    """

    def __init__(self, model: str, parts, *, client_fraction: float, local_epochs: int,
                 batch_size: int, lr: float, seed: int = 0, root: str | None = None):
        train_set, test_set = load_datasets(root)
        self.global_model = tutorial_model(model, seed=seed)
        self.client_loaders = make_client_loaders(train_set, parts, batch_size)
        self.test_loader = DataLoader(test_set, batch_size=TEST_BATCH_SIZE, shuffle=False)
        self.clients_per_round = max(round(client_fraction * parts.num_clients), 1)
        self.local_epochs, self.lr = local_epochs, lr
        self.rng = np.random.default_rng(seed)

    def step(self) -> dict:
        """One round plus test evaluation; returns accuracy, samples and timings (s)."""
        t0 = time.perf_counter()
        samples = run_round(self.global_model, self.client_loaders, self.clients_per_round,
                            self.local_epochs, self.lr, self.rng)
        t1 = time.perf_counter()
        acc, loss = test(self.global_model, self.test_loader)
        t2 = time.perf_counter()
        return {"accuracy": acc, "loss": loss, "samples": samples,
                "train_seconds": t1 - t0, "seconds": t2 - t0}


def add_job_arguments(ap: argparse.ArgumentParser) -> None:
    """The FedAvg job's options, shared with ``flower_fedavg.py``."""
    ap.add_argument("--model", default="2nn")
    ap.add_argument("--scheme", default="iid")
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("-C", type=float, default=0.1)
    ap.add_argument("-E", type=int, default=1)
    ap.add_argument("-B", type=int, default=10)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--rounds", type=int, default=5)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="FedAvg, tutorial style")
    add_job_arguments(ap)
    args = ap.parse_args(argv)
    train_set, _ = load_datasets()
    parts = partition(train_set.targets, args.scheme, args.clients, seed=0)
    fl = TutorialFedAvg(args.model, parts, client_fraction=args.C, local_epochs=args.E,
                        batch_size=args.B, lr=args.lr)
    for r in range(1, args.rounds + 1):
        s = fl.step()
        print(f"round {r}: accuracy {s['accuracy']:.4f}, {s['seconds']:.2f} s "
              f"({s['train_seconds']:.2f} s training)")


if __name__ == "__main__":
    main()
