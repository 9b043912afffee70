"""Per-client views of a federated model: local test sets, per-client accuracy, fine-tuning.

One global test accuracy hides who the model serves badly. Under non-IID data the
global model can be good on average and poor for the clients whose data is least
like the rest. So, as LEAF does, each client keeps a small, seeded share of its own
data as a *local test set*, and the global model is scored on every client's local
test set separately: :func:`client_accuracy`, summarised per round by
:func:`spread` (mean, 10th and 90th percentiles, worst client).

Two ways to close the gap, compared in notebook 12:

* **local fine-tuning** (:func:`finetune`): after federated training each client
  takes the global model and trains it a little more on its own data;
* **a personalised algorithm**: ``algorithms.get("fedper")`` keeps each client's
  last layer on the client (Arivazhagan et al. 2019).

Examples
--------
>>> import torch
>>> from fedlab_widgets import partition
>>> parts = partition(torch.arange(1000) % 10, "iid", 10, seed=0)
>>> train_parts, local_test = split_local_test(parts, 0.2, seed=0)
>>> int(train_parts.sizes.sum()), sum(len(ix) for ix in local_test)
(800, 200)
>>> spread([0.5, 0.9, 0.7, 1.0])["worst"]
0.5
"""

from __future__ import annotations

from dataclasses import replace


import numpy as np
import torch
from torch import nn

from .engines import FlatLayout, Schedule
from .history import accuracy_spread
from .partition import Partition
from .config import run_parameter

from .seeds import generator
from .threads import torch_threads

__all__ = ["split_local_test", "client_accuracy", "spread", "finetune"]


def split_local_test(partition: Partition, fraction: float, *, seed: int = 0
                     ) -> tuple[Partition, list[torch.Tensor]]:
    """Hold out ``fraction`` of each client's samples (at least one, and at least one
    left to train on) as its local test set, drawn from ``seed``.

    Returns the training partition (same scheme, parameters and seed) and the local
    test indices, one tensor per client (empty for a client with a single sample).
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.floating)) \
            or not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"local_test_fraction must be a number in (0, 1); got {fraction!r}")
    train_ix, test_ix = [], []
    for k, ix in enumerate(partition.client_indices):
        n = len(ix)
        t = 0 if n < 2 else min(n - 1, max(1, round(float(fraction) * n)))
        perm = ix[torch.randperm(n, generator=generator(seed, 7, k))]
        test_ix.append(perm[:t].sort().values)
        train_ix.append(perm[t:].sort().values)
    train = replace(partition, client_indices=train_ix, params=dict(partition.params))
    return train, test_ix


@torch.inference_mode()
def _correct(model: nn.Module, dataset, ix: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    out = torch.empty(len(ix), dtype=torch.bool)
    for i in range(0, len(ix), batch_size):
        b = ix[i:i + batch_size]
        out[i:i + batch_size] = model(dataset.images[b]).argmax(1) == dataset.labels[b]
    return out


@torch.no_grad()
def client_accuracy(model: nn.Module, dataset, local_test: list[torch.Tensor], *,
                    personal: dict[int, torch.Tensor] | None = None) -> np.ndarray:
    """Accuracy of ``model`` on each client's local test set (NaN where it is empty).

    ``personal`` maps a client to its own flat parameters ``[D]`` (FedPer's model
    with its head, or a fine-tuned model); those clients are scored with them
    instead of ``model``.
    """
    personal = personal or {}
    was_training = model.training
    model.eval()
    acc = np.full(len(local_test), np.nan)
    shared = [k for k, ix in enumerate(local_test) if len(ix) and k not in personal]
    if shared:
        ix = torch.cat([local_test[k] for k in shared])
        owner = torch.cat([torch.full((len(local_test[k]),), i) for i, k in enumerate(shared)])
        right = torch.zeros(len(shared)).index_add_(0, owner, _correct(model, dataset, ix).float())
        n = torch.tensor([len(local_test[k]) for k in shared], dtype=torch.float32)
        acc[shared] = (right / n).numpy()
    if personal:
        layout = FlatLayout(model)
        params = list(model.parameters())
        keep = layout.flatten(params)
        try:
            for k, xk in personal.items():
                if len(local_test[k]):
                    torch._foreach_copy_(params, layout.views(xk.to(keep.dtype)))
                    acc[k] = float(_correct(model, dataset, local_test[k]).float().mean())
        finally:
            torch._foreach_copy_(params, layout.views(keep))
    model.train(was_training)
    return acc


def spread(acc) -> dict:
    """Mean, 10th and 90th percentiles and worst of per-client accuracies (NaNs ignored)."""
    return accuracy_spread(acc)


def finetune(sim, *, local_epochs: int = 1, lr: float | None = None,
             batch_size: int | None = None, chunk: int = 100) -> np.ndarray:
    """Per-client accuracy after each client fine-tunes the current model on its own data.

    Every client (not only sampled ones) starts from its model in ``sim`` (the
    global model, or for FedPer the global base with its own head), runs
    ``local_epochs`` of SGD with ``lr`` and ``batch_size`` (default: the
    simulation's) on its training data, and is scored on its local test set. The
    simulation itself is not changed. Needs ``Simulation(..., local_test_fraction=...)``.

    Returns
    -------
    ndarray [num_clients]
        Accuracy of each client's fine-tuned model (NaN without a local test set).
    """
    if sim.local_test is None:
        raise ValueError("finetune needs per-client test sets: build the Simulation with "
                         "local_test_fraction (for example 0.2)")
    local_epochs = run_parameter("local_epochs").check(local_epochs)
    lr = sim.lr if lr is None else run_parameter("lr").check(lr)
    b = sim.batch_size if batch_size is None else run_parameter("batch_size").check(batch_size)
    params = list(sim.global_model.parameters())
    out = np.full(sim.num_clients, np.nan)
    with torch_threads(sim.num_threads), torch.no_grad():
        x = sim.layout.flatten(params)
        for lo in range(0, sim.num_clients, chunk):
            clients = [k for k in range(lo, min(lo + chunk, sim.num_clients))
                       if len(sim.partition.client_indices[k])]
            if not clients:
                continue
            orders = []
            for k in clients:
                ix = sim.partition.client_indices[k]
                orders.append([ix[torch.randperm(len(ix), generator=generator(sim.seed, 8, k, e))]
                               for e in range(local_epochs)])
            schedule = Schedule.from_orders(clients, orders, batch_size=b)
            start = torch.stack([sim.client_model(k) for k in schedule.clients])
            updates = sim.engine.train_clients(x, schedule, lr=lr, start=start)
            personal = {k: start[i] + updates.delta[i] for i, k in enumerate(schedule.clients)}
            chosen = set(clients)
            tests = [ix if k in chosen else ix[:0] for k, ix in enumerate(sim.local_test)]
            acc = client_accuracy(sim.global_model, sim.train, tests, personal=personal)
            out[clients] = acc[clients]
    return out
