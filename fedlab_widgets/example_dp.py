"""Example-level DP inside each client: FedAvg whose local training is DP-SGD (Opacus).

DP-FedAvg (``algorithms.get("dp-fedavg")``) is **user-level** (client-level) DP: the server's
model hardly changes if one client's *whole* data is swapped, so it hides whether a writer, a
phone, a hospital took part at all. DP-SGD inside each client (Abadi et al. 2016; Opacus does the
per-example clipping, the noise and the accounting) is **example-level** DP: it hides any *one*
example, but a client's many examples together are protected only by group privacy (k examples:
about k times the epsilon), so a client's style, its writer, can still show through.

Here each client trains with Opacus' ``PrivacyEngine`` (Poisson sampling of its examples at rate
``batch_size / n_k``, each example's gradient clipped to ``max_grad_norm``, Gaussian noise of
``noise_multiplier * max_grad_norm``), the server averages the clients' models weighted by their
sizes, and every client keeps one Opacus RDP accountant across rounds: the run's epsilon is the
largest client's (each example lives on one client).

Examples
--------
>>> import torch
>>> from fedlab_widgets import load_mnist, partition
>>> train, test = load_mnist()
>>> small = train.subset(torch.arange(600))
>>> r = dp_sgd_fedavg(small, test.subset(torch.arange(500)), partition(small.labels, "iid", 3, seed=0),
...                   rounds=2, model="logreg", batch_size=50, lr=0.5, noise_multiplier=1.0, seed=0)
>>> len(r.accuracy), bool(0 < r.epsilon < 10)
(2, True)
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .evaluation import evaluate
from .models import as_model
from .params import Param, check_params

__all__ = ["dp_sgd_fedavg", "ExampleDpResult", "EXAMPLE_DP_PARAMETERS"]

EXAMPLE_DP_PARAMETERS = (
    Param("rounds", 5, kind="int", lo=1, hi=10_000),
    Param("local_epochs", 1, kind="int", lo=1, hi=100),
    Param("batch_size", 32, kind="int", lo=1, hi=10_000, doc="expected batch (Poisson sampling)"),
    Param("lr", 0.1, lo=0.0, lo_open=True, hi=10.0),
    Param("noise_multiplier", 1.0, lo=0.0, lo_open=True, hi=100.0,
          doc="noise on each batch's summed gradient, in units of max_grad_norm"),
    Param("max_grad_norm", 1.0, lo=0.0, lo_open=True, doc="each example's gradient clipped to this"),
    Param("delta", 1e-5, lo=0.0, lo_open=True, hi=1.0, hi_open=True),
    Param("client_fraction", 1.0, lo=0.0, lo_open=True, hi=1.0),
)


@dataclass
class ExampleDpResult:
    """What :func:`dp_sgd_fedavg` measured: test accuracy after each round, each client's
    example-level epsilon (Opacus' RDP accountant), and the largest, the run's guarantee."""

    accuracy: list[float]
    client_epsilon: np.ndarray
    delta: float
    model: nn.Module = field(repr=False)

    @property
    def epsilon(self) -> float:
        return float(self.client_epsilon.max())


def _local_dp_sgd(model, engine, images, labels, p: dict, gen: torch.Generator):
    from opacus.data_loader import DPDataLoader
    data = torch.utils.data.TensorDataset(images, labels)
    loader = DPDataLoader(data, sample_rate=min(1.0, p["batch_size"] / len(data)), generator=gen)
    opt = torch.optim.SGD(model.parameters(), lr=p["lr"])
    private, opt, loader = engine.make_private(
        module=model, optimizer=opt, data_loader=loader, noise_multiplier=p["noise_multiplier"],
        max_grad_norm=p["max_grad_norm"], poisson_sampling=False, noise_generator=gen)
    for _ in range(p["local_epochs"]):
        for x, y in loader:
            opt.zero_grad(set_to_none=True)
            if len(y):
                nn.functional.cross_entropy(private(x), y).backward()
            opt.step()
    return private._module


def dp_sgd_fedavg(train, test, parts, *, rounds: int = 5, model="2nn", local_epochs: int = 1,
                  batch_size: int = 32, lr: float = 0.1, noise_multiplier: float = 1.0,
                  max_grad_norm: float = 1.0, delta: float = 1e-5, client_fraction: float = 1.0,
                  seed: int = 0) -> ExampleDpResult:
    """FedAvg with DP-SGD (Opacus) as every client's local training: example-level DP.

    Parameters
    ----------
    train, test : FederatedDataset
    parts : Partition
        Which training examples each client holds.
    rounds, local_epochs, batch_size, lr, client_fraction
        As in :class:`~fedlab_widgets.Simulation` (``batch_size`` is the expected size of
        Opacus' Poisson-sampled batches).
    noise_multiplier, max_grad_norm, delta
        DP-SGD's noise (in units of the clip), per-example clip, and the delta epsilon is read at.
    seed : int
        The initial model, the clients sampled, the batches and the noise.
    """
    from opacus import PrivacyEngine
    p = check_params("dp_sgd_fedavg", EXAMPLE_DP_PARAMETERS, dict(
        rounds=rounds, local_epochs=local_epochs, batch_size=batch_size, lr=lr,
        noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm, delta=delta,
        client_fraction=client_fraction))
    global_model, _ = as_model(model, seed=seed)
    clients = parts.client_indices
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")             # Opacus' note on secure RNG (this is teaching)
        engines = [PrivacyEngine(accountant="rdp") for _ in clients]
    m = max(1, round(p["client_fraction"] * len(clients)))
    gen = torch.Generator().manual_seed(seed)
    accuracy = []
    for _ in range(p["rounds"]):
        chosen = sorted(torch.randperm(len(clients), generator=gen)[:m].tolist())
        states, sizes = [], []
        for k in chosen:
            ix = clients[k]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")     # Opacus' notes on secure RNG and on hooks
                local = _local_dp_sgd(copy.deepcopy(global_model), engines[k], train.images[ix],
                                      train.labels[ix], p, gen)
            states.append({n: t.detach() for n, t in local.state_dict().items()})
            sizes.append(len(ix))
        w = torch.tensor(sizes, dtype=torch.float64) / sum(sizes)
        mean = {n: sum(wi * s[n].double() for wi, s in zip(w, states)).to(s0.dtype)
                for (n, s0) in states[0].items()}
        global_model.load_state_dict(mean)
        accuracy.append(evaluate(global_model, test)[0])
    eps = np.array([e.get_epsilon(p["delta"]) if len(e.accountant) else 0.0 for e in engines])
    return ExampleDpResult(accuracy, eps, p["delta"], global_model)
