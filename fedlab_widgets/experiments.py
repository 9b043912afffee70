"""Small experiments the notebooks are built on.

The notebooks show the idea; the loops live here:

* :func:`train_centralised` -- the non-federated baseline (plain minibatch SGD on
  all the data), recorded as a :class:`~fedlab_widgets.simulation.History` so that
  it plots beside FedAvg runs;
* :func:`local_train` -- one client training alone from a given model (what
  happens inside a FedAvg round, used to show client drift);
* :func:`sweep` -- FedAvg over a grid of settings (e.g. ``local_epochs`` x
  ``batch_size``), reporting rounds to a target accuracy;
* :func:`client_accuracy` and :func:`per_class_accuracy` -- who a global model
  works for: accuracy on each client's own data, and on each digit;
* :func:`privacy_utility` -- DP-FedAvg's final accuracy against the epsilon spent,
  for several noise multipliers and numbers of clients;
* :func:`format_table` -- rows of results as a fixed-width text table.

Everything random takes ``seed=``: the same seed gives the same numbers.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from typing import Iterable, Mapping, Sequence

import torch
from torch import nn

from .models import as_model
from .partition import Partition
from .config import run_parameter
from .params import Param
from .simulation import History, RoundRecord, Simulation, evaluate, sgd_steps
from .tables import format_table
from .threads import resolve_num_threads, torch_threads

_EPOCHS = Param("epochs", 1, kind="int", lo=1, doc="passes over the data")
_NUM_CLIENTS = Param("num_clients", 100, kind="int", lo=1, doc="number of clients K")

__all__ = ["train_centralised", "local_train", "sweep", "privacy_utility", "client_accuracy",
           "per_class_accuracy", "format_table"]


def _sgd_epochs(model: nn.Module, dataset, indices: torch.Tensor, *, epochs: int,
                batch_size: int | None, lr: float, generator: torch.Generator,
                after_epoch=None) -> None:
    """Plain minibatch SGD over ``indices`` (reshuffled every epoch), in place."""
    params = [p for p in model.parameters()]
    n = len(indices)
    b = n if batch_size is None else min(batch_size, n)
    model.train()
    for epoch in range(epochs):
        order = indices[torch.randperm(n, generator=generator)]
        losses = sgd_steps(model, params, dataset, (order[i:i + b] for i in range(0, n, b)), lr=lr)
        if after_epoch is not None:
            after_epoch(epoch + 1, float(torch.stack(losses).mean()))


def train_centralised(model, train, test, *, epochs: int = 1, batch_size: int | None = 10,
                      lr: float = 0.05, seed: int = 0, label: str | None = None,
                      num_threads: int | str | None = "auto") -> History:
    """Train one model on all the training data with minibatch SGD: the baseline.

    This is what FedAvg is compared with: the data in one place, no clients, no
    rounds. One :class:`~fedlab_widgets.simulation.RoundRecord` is kept per epoch
    (its ``round`` is the epoch number), with the test accuracy and loss after the
    epoch, the mean training loss over the epoch, ``samples`` = the training
    samples processed, and 0 bytes communicated.

    Parameters
    ----------
    model : str or torch.nn.Module
        A name for :func:`~fedlab_widgets.models.get_model` (initial weights from
        ``seed``) or a module (copied, not modified).
    train, test : FederatedDataset
    epochs : int, default 1
        Passes over the training data (>= 1).
    batch_size : int or None, default 10
        Minibatch size; None means full-batch gradient descent.
    lr : float, default 0.05
        SGD learning rate (no momentum, no weight decay: the same optimiser as a
        FedAvg client).
    seed : int, default 0
        Seeds the initial weights (for a model name) and the shuffling.
    label : str, optional
        The history's label (default ``"centralised, B=..., lr=..."``).
    num_threads : int, "auto" or None, default "auto"
        Torch threads while training, as for :class:`~fedlab_widgets.simulation.Simulation`
        ("auto": physical cores minus one, 1 to 4; None: leave the setting alone). On a
        2-core laptop with anything else busy, two threads made this 25x slower (8 s
        became 225 s): "auto" gives one there.

    Returns
    -------
    History
        ``history.model`` holds the trained model.

    Examples
    --------
    >>> from fedlab_widgets import load_mnist
    >>> train, test = load_mnist()
    >>> h = train_centralised("2nn", train, test, epochs=1, batch_size=100, lr=0.1)
    >>> h.final_accuracy > 0.9
    True
    """
    epochs = _EPOCHS.check(epochs)
    batch_size = run_parameter("batch_size").check(batch_size)
    lr = run_parameter("lr").check(lr)
    net, name = as_model(model, seed=seed)
    b = "inf" if batch_size is None else batch_size
    history = History(
        config={"model": name, "dataset": getattr(train, "name", ""), "centralised": True,
                "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed},
        label=label or f"centralised, B={b}, lr={lr:g}")
    g = torch.Generator().manual_seed(int(seed))
    t0 = [time.perf_counter()]

    def record(epoch, train_loss):
        acc, loss = evaluate(net, test)
        history.records.append(RoundRecord(
            round=epoch, accuracy=acc, loss=loss, train_loss=train_loss, clients=[],
            bytes_down=0, bytes_up=0, seconds=time.perf_counter() - t0[0], samples=len(train)))
        t0[0] = time.perf_counter()

    num_threads = resolve_num_threads(num_threads)
    with torch_threads(num_threads):
        _sgd_epochs(net, train, torch.arange(len(train)), epochs=epochs, batch_size=batch_size,
                    lr=lr, generator=g, after_epoch=record)
    net.eval()
    history.model = net
    return history


def local_train(model: nn.Module, dataset, indices, *, epochs: int = 1,
                batch_size: int | None = 10, lr: float = 0.05, seed: int = 0) -> nn.Module:
    """One client's local update: a trained copy of ``model`` (which is not modified).

    Exactly what a FedAvg client does in a round -- ``epochs`` passes of minibatch
    SGD over its own samples -- so that its result can be inspected on its own.

    Parameters
    ----------
    model : torch.nn.Module
        The starting point (e.g. the global model ``sim.global_model``).
    dataset : FederatedDataset
    indices : torch.Tensor or sequence of int
        The client's samples, e.g. ``partition.client_indices[k]``.
    epochs, batch_size, lr
        As for a client in :class:`~fedlab_widgets.simulation.Simulation`.
    seed : int, default 0
        Seeds the shuffling.

    Returns
    -------
    torch.nn.Module
        The client's model after local training (in eval mode).
    """
    epochs = _EPOCHS.check(epochs)
    batch_size = run_parameter("batch_size").check(batch_size)
    indices = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
    if len(indices) == 0:
        raise ValueError("indices must not be empty")
    net = copy.deepcopy(model)
    _sgd_epochs(net, dataset, indices, epochs=epochs, batch_size=batch_size, lr=float(lr),
                generator=torch.Generator().manual_seed(int(seed)))
    return net.eval()


def sweep(train, test, *, model="2nn", partition: Partition, grid: Mapping[str, Sequence],
          rounds: int, target: float | None = None, seed: int = 0, **fixed) -> list[dict]:
    """Run FedAvg once for every combination of the ``grid`` values.

    Parameters
    ----------
    train, test : FederatedDataset
    model : str or torch.nn.Module, default "2nn"
    partition : Partition
        The clients (the same for every run).
    grid : dict of name -> list of values
        :class:`~fedlab_widgets.simulation.Simulation` options to vary, e.g.
        ``{"local_epochs": [1, 5], "batch_size": [50, 10]}``; the runs go through
        the combinations in order (the last key varies fastest).
    rounds : int
        The most rounds per run.
    target : float, optional
        Stop a run as soon as its test accuracy reaches ``target`` and report the
        round it happened (None in ``rounds_to_target`` if never).
    seed : int, default 0
        The same seed for every run (same initial model, same sampled clients), so
        that runs differ only in the grid values.
    **fixed
        Other Simulation options, the same for every run (``client_fraction``,
        ``lr``, ``engine``, ...).

    Returns
    -------
    list of dict
        One row per run: the grid values, then ``updates_per_round`` (mean local
        SGD steps per sampled client per round, McMahan et al.'s u), ``rounds``
        (run), ``rounds_to_target``, ``final_accuracy``, ``megabytes``
        (communicated), ``seconds`` and ``history`` (the full History).

    Examples
    --------
    >>> from fedlab_widgets import load_mnist, partition
    >>> train, test = load_mnist()
    >>> parts = partition(train, "iid", 100, seed=0)
    >>> rows = sweep(train, test, partition=parts, grid={"batch_size": [50, 600]},
    ...              rounds=2, lr=0.1)  # doctest: +SKIP
    >>> print(format_table(rows))  # doctest: +SKIP
    """
    if not isinstance(grid, Mapping) or not grid:
        raise ValueError("grid must be a non-empty dict of option name -> list of values")
    clash = set(grid) & set(fixed)
    if clash:
        raise ValueError(f"{', '.join(sorted(clash))} given both in grid and as fixed options")
    rounds = run_parameter("rounds").check(rounds)
    keys = list(grid)
    values = [list(v) if isinstance(v, Iterable) and not isinstance(v, str) else [v]
              for v in grid.values()]
    sizes = partition.sizes.to(torch.float64)
    rows = []
    for combo in itertools.product(*values):
        options = {**fixed, **dict(zip(keys, combo))}
        t0 = time.perf_counter()
        sim = Simulation(model, train, test, partition, seed=seed, **options)
        h = sim.run(rounds, target_accuracy=target)
        b = sizes if sim.batch_size is None else sizes.clamp(max=sim.batch_size)
        u = float((sim.local_epochs * torch.ceil(sizes / b)).mean())
        row = dict(zip(keys, combo))
        row.update(updates_per_round=u, rounds=len(h),
                   rounds_to_target=None if target is None else h.rounds_to(target),
                   final_accuracy=h.final_accuracy, megabytes=float(h.bytes_total[-1]) / 1e6,
                   seconds=time.perf_counter() - t0, history=h)
        rows.append(row)
    return rows


def privacy_utility(train, test, *, noise_multipliers: Sequence[float] = (0.5, 1.0, 2.0, 4.0),
                    num_clients: Sequence[int] = (100, 1000), client_fraction: float = 0.1,
                    clip_norm: float = 0.5, delta: float = 1e-5, rounds: int = 20,
                    model="logreg", scheme: str = "iid", seed: int = 0, **fixed) -> list[dict]:
    """DP-FedAvg's accuracy and epsilon for each noise multiplier and number of clients.

    For each ``K`` in ``num_clients`` the training set is split into ``K`` clients
    (``scheme``, seed ``seed``); FedAvg without privacy runs once as the reference
    (``noise_multiplier`` None, ``epsilon`` inf), then DP-FedAvg once per noise
    multiplier. ``client_fraction`` is the same for all K, so the sampling ratio,
    and therefore epsilon, is the same across K for a given noise multiplier:
    only the number of clients whose updates share the noise changes.

    Parameters
    ----------
    noise_multipliers : list of float
    num_clients : list of int
    client_fraction, clip_norm, delta, rounds, model, scheme, seed
        As in :class:`~fedlab_widgets.simulation.Simulation` and ``algorithms.get("dp-fedavg")``.
    **fixed
        Other Simulation options (``lr``, ``batch_size``, ``local_epochs``, ...).

    Returns
    -------
    list of dict
        ``num_clients``, ``clients_per_round``, ``noise_multiplier``, ``epsilon``,
        ``final_accuracy``, ``seconds``, ``history``.

    Examples
    --------
    >>> from fedlab_widgets import load_mnist
    >>> train, test = load_mnist()
    >>> rows = privacy_utility(train, test, noise_multipliers=[1.0], num_clients=[100],
    ...                        rounds=2, lr=0.1)
    >>> [(r["noise_multiplier"], round(r["epsilon"], 2)) for r in rows]
    [(None, inf), (1.0, 10.6)]
    """
    from . import algorithms
    from .partition import partition as make_partition

    rounds = run_parameter("rounds").check(rounds)
    rows = []
    for k in num_clients:
        parts = make_partition(train.labels, scheme, _NUM_CLIENTS.check(k), seed=seed)
        for z in [None, *noise_multipliers]:
            alg = "fedavg" if z is None else algorithms.get(
                "dp-fedavg", clip_norm=clip_norm, noise_multiplier=z, delta=delta)
            t0 = time.perf_counter()
            sim = Simulation(model, train, test, parts, client_fraction=client_fraction,
                             algorithm=alg, seed=seed, eval_every=rounds, **fixed)
            h = sim.run(rounds)
            rows.append(dict(num_clients=k, clients_per_round=sim.clients_per_round,
                             noise_multiplier=z,
                             epsilon=math.inf if z is None else float(h.epsilon[-1]),
                             final_accuracy=0.0 if h.diverged else h.final_accuracy,
                             seconds=time.perf_counter() - t0, history=h))
    return rows


@torch.inference_mode()
def _correct(model: nn.Module, dataset, batch_size: int = 5000) -> torch.Tensor:
    was_training = model.training
    model.eval()
    out = torch.cat([model(dataset.images[i:i + batch_size]).argmax(1)
                     for i in range(0, len(dataset.labels), batch_size)])
    model.train(was_training)
    return (out == dataset.labels).to(torch.float64)


def client_accuracy(model: nn.Module, dataset, partition: Partition) -> torch.Tensor:
    """Accuracy of ``model`` on each client's own (training) samples.

    For held-out per-client test sets see :mod:`fedlab_widgets.personalisation`
    (``Simulation(..., local_test_fraction=0.2)``).

    Parameters
    ----------
    model : torch.nn.Module
        E.g. ``sim.global_model``.
    dataset : FederatedDataset
        The dataset the partition indexes (the training set).
    partition : Partition

    Returns
    -------
    torch.Tensor
        float64, ``[num_clients]``: the fraction of client ``k``'s samples the
        model classifies correctly.
    """
    if len(dataset.labels) != partition.labels.shape[0]:
        raise ValueError(f"partition indexes {partition.labels.shape[0]} samples but the "
                         f"dataset has {len(dataset.labels)}: pass the dataset it was made from")
    from .personalisation import client_accuracy as on_index_sets   # the one implementation
    return torch.from_numpy(on_index_sets(model, dataset, partition.client_indices))


def per_class_accuracy(model: nn.Module, dataset) -> torch.Tensor:
    """Accuracy of ``model`` on each class of ``dataset`` (float64, ``[num_classes]``).

    A class with no samples gets NaN.
    """
    correct = _correct(model, dataset)
    k = int(getattr(dataset, "num_classes", int(dataset.labels.max()) + 1))
    total = torch.bincount(dataset.labels, minlength=k).to(torch.float64)
    hits = torch.bincount(dataset.labels, weights=correct, minlength=k)
    return hits / total
