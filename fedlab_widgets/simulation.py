"""The federated round loop: FedAvg (McMahan et al. 2017, Algorithm 1) in one process.

Each round the server samples ``max(round(C * K), 1)`` of the ``K`` clients without
replacement and sends them the global model; each runs ``local_epochs`` of
minibatch SGD over its own shuffled data; the server replaces the global model
with the average of the client models weighted by their sample counts.

Clients are simulated, not separate processes: a client's data is a slice of the
shared in-memory training tensors and one reusable worker model is trained per
client (no DataLoader, no deep copy per client). How the sampled clients are
trained is an *engine*; every engine sees the same random choices (which clients,
which minibatch order), so engines agree up to float rounding.

Randomness: the initial weights (when ``model`` is a name), the clients sampled in
round ``r`` and client ``k``'s data order in epoch ``e`` of round ``r`` are each
drawn from a generator seeded with ``(seed, r, k, e)``, so the same seed gives the
same history, however the run is split into calls.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .models import as_model, count_parameters
from .partition import Partition

__all__ = ["Simulation", "History", "RoundRecord", "evaluate", "ENGINES"]

BYTES_PER_PARAMETER = 4  # float32 on the wire


@dataclass
class RoundRecord:
    """What happened in one round.

    ``accuracy`` and ``loss`` are the global model's on the test set after the
    round (NaN on rounds skipped by ``eval_every``); ``train_loss`` is the mean
    client training loss (each client's mean minibatch loss, weighted by its
    sample count); bytes count float32 parameters times sampled clients.
    """

    round: int
    accuracy: float
    loss: float
    train_loss: float
    clients: list[int]
    bytes_down: int
    bytes_up: int
    seconds: float
    samples: int = 0  # training samples processed this round (sizes x local_epochs)


@dataclass
class History:
    """The records of a run, with per-round arrays and JSON save/load.

    Examples
    --------
    >>> h = History(label="demo")
    >>> h.rounds_to(0.9) is None
    True
    """

    records: list[RoundRecord] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    label: str = ""
    stop_reason: str | None = None

    def __len__(self) -> int:
        return len(self.records)

    def _array(self, name: str, dtype=float) -> np.ndarray:
        return np.array([getattr(r, name) for r in self.records], dtype=dtype)

    @property
    def rounds(self) -> np.ndarray:
        return self._array("round", int)

    @property
    def accuracy(self) -> np.ndarray:
        return self._array("accuracy")

    @property
    def loss(self) -> np.ndarray:
        return self._array("loss")

    @property
    def train_loss(self) -> np.ndarray:
        return self._array("train_loss")

    @property
    def seconds(self) -> np.ndarray:
        return self._array("seconds")

    @property
    def bytes_down(self) -> np.ndarray:
        return self._array("bytes_down", np.int64)

    @property
    def bytes_up(self) -> np.ndarray:
        return self._array("bytes_up", np.int64)

    @property
    def bytes_total(self) -> np.ndarray:
        """Cumulative bytes sent down and up, per round."""
        return np.cumsum(self.bytes_down + self.bytes_up)

    @property
    def final_accuracy(self) -> float:
        """The last evaluated test accuracy (NaN if none)."""
        acc = self.accuracy
        acc = acc[np.isfinite(acc)]
        return float(acc[-1]) if len(acc) else float("nan")

    @property
    def best_accuracy(self) -> float:
        acc = self.accuracy
        acc = acc[np.isfinite(acc)]
        return float(acc.max()) if len(acc) else float("nan")

    @property
    def diverged(self) -> bool:
        return bool(self.stop_reason and self.stop_reason.startswith("diverged"))

    def rounds_to(self, target: float) -> int | None:
        """The first round whose test accuracy reached ``target``, or None."""
        for r in self.records:
            if np.isfinite(r.accuracy) and r.accuracy >= target:
                return r.round
        return None

    def to_dict(self) -> dict:
        return {"label": self.label, "config": self.config, "stop_reason": self.stop_reason,
                "records": [asdict(r) for r in self.records]}

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        return cls(records=[RoundRecord(**r) for r in d["records"]], config=d.get("config", {}),
                   label=d.get("label", ""), stop_reason=d.get("stop_reason"))

    def save(self, path) -> Path:
        """Write the history as JSON (NaN stored as null)."""
        path = Path(path)
        path.write_text(json.dumps(_nan_to_none(self.to_dict()), indent=1))
        return path

    @classmethod
    def load(cls, path) -> "History":
        d = json.loads(Path(path).read_text())
        for r in d["records"]:
            for k in ("accuracy", "loss", "train_loss"):
                if r.get(k) is None:
                    r[k] = float("nan")
        return cls.from_dict(d)

    def summary(self) -> str:
        """One line: final accuracy, rounds, seconds, megabytes, stop reason."""
        s = (f"{self.label or 'run'}: {len(self)} rounds, final accuracy "
             f"{self.final_accuracy:.4f}, {self.seconds.sum():.1f} s, "
             f"{self.bytes_total[-1] / 1e6 if len(self) else 0:.1f} MB communicated")
        return s + (f" ({self.stop_reason})" if self.stop_reason else "")


def _nan_to_none(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    return x


@torch.inference_mode()
def evaluate(model: nn.Module, dataset, *, batch_size: int = 256) -> tuple[float, float]:
    """Test accuracy and mean cross-entropy loss of ``model`` on ``dataset``.

    ``batch_size`` 256 keeps the CNN's largest activation (~26 MB) under glibc's 32 MB
    mmap threshold, so its buffers are reused rather than page-faulted in afresh for
    every batch: about twice as fast as 2000 for the CNN here, the same for the 2NN.

    Examples
    --------
    >>> from fedlab_widgets import load_mnist, get_model
    >>> _, test = load_mnist()
    >>> acc, loss = evaluate(get_model("2nn", seed=0), test)
    >>> 0.0 <= acc <= 1.0
    True
    """
    was_training = model.training
    model.eval()
    correct, total_loss, n = 0, 0.0, len(dataset.labels)
    for i in range(0, n, batch_size):
        out = model(dataset.images[i:i + batch_size])
        y = dataset.labels[i:i + batch_size]
        total_loss += float(F.cross_entropy(out, y, reduction="sum"))
        correct += int((out.argmax(1) == y).sum())
    model.train(was_training)
    return correct / n, total_loss / n


def _seed(*parts: int) -> int:
    """A 63-bit seed derived from integers (stable across runs and processes)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> 1)


def _generator(*parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(_seed(*parts))


def sgd_steps(model: nn.Module, params: list[torch.Tensor], dataset, batches, *,
              lr: float) -> list[torch.Tensor]:
    """Plain SGD (no momentum) on ``model``, one step per index tensor in ``batches``.

    The optimiser of a FedAvg client, and of the centralised baseline: each step
    minimises its minibatch's mean cross-entropy; ``params`` are updated in place.
    Returns the (detached) minibatch losses.
    """
    losses = []
    for batch in batches:
        loss = F.cross_entropy(model(dataset.images[batch]), dataset.labels[batch])
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            torch._foreach_add_(params, grads, alpha=-lr)
        losses.append(loss.detach())
    return losses


class SequentialEngine:
    """The reference engine: trains the sampled clients one after another.

    One worker module is reused for every client: its parameters are overwritten
    with the global model's, trained with plain SGD, and added into the weighted
    average.
    """

    name = "sequential"

    def __init__(self, sim: "Simulation"):
        self.sim = sim
        self.worker = copy.deepcopy(sim.global_model)
        self.worker.train()
        self.params = [p for p in self.worker.parameters()]

    def train_round(self, round_: int, clients: list[int]) -> tuple[list[torch.Tensor], float]:
        sim = self.sim
        global_params = [p.detach() for p in sim.global_model.parameters()]
        sizes = [len(sim.partition.client_indices[k]) for k in clients]
        total = float(sum(sizes))
        avg = [torch.zeros_like(p) for p in global_params]
        train_loss = 0.0
        for k, n_k in zip(clients, sizes):
            with torch.no_grad():
                torch._foreach_copy_(self.params, global_params)
            batches = (batch for _, batch in sim.client_batches(round_, k))
            losses = sgd_steps(self.worker, self.params, sim.train, batches, lr=sim.lr)
            client_loss = float(torch.stack(losses).mean())
            train_loss += n_k / total * client_loss
            with torch.no_grad():
                torch._foreach_add_(avg, [p.detach() for p in self.params], alpha=n_k / total)
        return avg, train_loss


ENGINES: dict[str, type] = {"sequential": SequentialEngine}


def _resolve_engine(name: str) -> type:
    if name == "auto":
        return ENGINES.get("vectorized", SequentialEngine)
    if name not in ENGINES:
        raise ValueError(f"engine must be one of auto, {', '.join(ENGINES)}; got {name!r}")
    return ENGINES[name]


class Simulation:
    """A FedAvg simulation: a global model, clients holding a partition, a round loop.

    Parameters
    ----------
    model : str or torch.nn.Module
        A name for :func:`get_model` (initial weights drawn from ``seed``) or a
        module whose current weights are the initial global model (it is copied,
        not modified).
    train, test : FederatedDataset
        In-memory datasets (see :func:`load_mnist`).
    partition : Partition
        Which training samples each client holds.
    client_fraction : float, default 0.1
        C, the fraction of clients sampled each round, in (0, 1].
    local_epochs : int, default 1
        E, passes over its own data each sampled client makes per round (>= 1).
    batch_size : int or None, default 10
        B, the local minibatch size (>= 1); None means full batch, so that
        ``local_epochs=1, batch_size=None`` is FedSGD.
    lr : float, default 0.1
        Client SGD learning rate (finite, > 0).
    seed : int, default 0
    eval_every : int, default 1
        Evaluate the global model on the test set every this many rounds (and on
        the last round of every call).
    engine : {"auto", "sequential", "vectorized"}, default "auto"
        How a round's clients are trained; all engines give the same result up
        to float rounding ("auto" picks "vectorized").
    num_threads : int or None, default 1
        torch intra-op threads used while a round runs (restored afterwards);
        None leaves torch's setting alone. One thread is the default because these
        small models gain little from a second thread on an idle laptop and lose
        up to 10x when anything else (the notebook UI, a browser) wants a core:
        OpenMP threads spin while they wait for each other (see bench/README.md).

    Examples
    --------
    >>> from fedlab_widgets import load_mnist, partition, Simulation
    >>> train, test = load_mnist()
    >>> parts = partition(train.labels, "iid", 10, seed=0)
    >>> sim = Simulation("2nn", train, test, parts, client_fraction=0.5, lr=0.05)
    >>> history = sim.run(2)
    >>> history.accuracy[-1] > 0.85
    True
    """

    def __init__(self, model, train, test, partition: Partition, *, client_fraction: float = 0.1,
                 local_epochs: int = 1, batch_size: int | None = 10, lr: float = 0.1,
                 seed: int = 0, eval_every: int = 1, engine: str = "auto",
                 num_threads: int | None = 1):
        self.client_fraction = _check_number("client_fraction", client_fraction, 0.0, 1.0,
                                             "in (0, 1]", lo_open=True)
        self.local_epochs = _check_int("local_epochs", local_epochs, 1)
        if batch_size is not None:
            batch_size = _check_int("batch_size", batch_size, 1, none_ok=" or None for full batch")
        self.batch_size = batch_size
        self.lr = _check_number("lr", lr, 0.0, math.inf, "> 0 (and finite)", lo_open=True)
        self.eval_every = _check_int("eval_every", eval_every, 1)
        if num_threads is not None:
            num_threads = _check_int("num_threads", num_threads, 1, none_ok=" or None")
        self.num_threads = num_threads
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an integer; got {seed!r}")
        self.seed = int(seed)
        if not isinstance(partition, Partition):
            raise ValueError(f"partition must be a Partition (see fedlab_widgets.partition); "
                             f"got {type(partition).__name__}")
        if partition.labels.shape[0] != len(train.labels) or not torch.equal(
                partition.labels, train.labels):
            raise ValueError("partition must be made from the training labels it is used with "
                             f"(partition has {partition.labels.shape[0]} samples, "
                             f"train has {len(train.labels)})")
        self.train, self.test, self.partition = train, test, partition
        self.global_model, self.model_name = as_model(model, seed=self.seed)
        self.global_model.train()
        self._initial_state = copy.deepcopy(self.global_model.state_dict())
        self.num_parameters = count_parameters(self.global_model)
        self.num_clients = partition.num_clients
        self.clients_per_round = max(round(self.client_fraction * self.num_clients), 1)
        self.engine_name = engine
        self.engine = _resolve_engine(engine)(self)
        self._stop = threading.Event()
        self.round = 0
        self.history = History(config=self.config(), label=self.default_label())

    # -- description ---------------------------------------------------------------
    def config(self) -> dict:
        """The settings of this simulation, as stored in its history."""
        return {
            "model": self.model_name, "dataset": getattr(self.train, "name", ""),
            "partition": self.partition.label(), "scheme": self.partition.scheme,
            "partition_params": dict(self.partition.params),
            "partition_seed": self.partition.seed,
            "partition_fingerprint": self.partition.fingerprint(),
            "num_clients": self.num_clients, "client_fraction": self.client_fraction,
            "clients_per_round": self.clients_per_round, "local_epochs": self.local_epochs,
            "batch_size": self.batch_size, "lr": self.lr, "seed": self.seed,
            "engine": self.engine.name, "num_threads": self.num_threads,
            "num_parameters": self.num_parameters,
        }

    def default_label(self) -> str:
        b = "inf" if self.batch_size is None else self.batch_size
        return (f"{self.model_name}, {self.partition.label()}, C={self.client_fraction:g}, "
                f"E={self.local_epochs}, B={b}, lr={self.lr:g}")

    # -- randomness shared by all engines ----------------------------------------------
    def sample_clients(self, round_: int) -> list[int]:
        """The clients sampled in ``round_`` (sorted), without replacement."""
        g = _generator(self.seed, 1, round_)
        return sorted(torch.randperm(self.num_clients, generator=g)[:self.clients_per_round].tolist())

    def client_order(self, round_: int, client: int, epoch: int) -> torch.Tensor:
        """Client ``client``'s training indices in the order of epoch ``epoch`` of ``round_``."""
        ix = self.partition.client_indices[client]
        g = _generator(self.seed, 2, round_, client, epoch)
        return ix[torch.randperm(len(ix), generator=g)]

    def client_batches(self, round_: int, client: int) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(epoch, indices)`` for each local minibatch of ``client`` in ``round_``."""
        n = len(self.partition.client_indices[client])
        b = n if self.batch_size is None else min(self.batch_size, n)
        for epoch in range(self.local_epochs):
            order = self.client_order(round_, client, epoch)
            for i in range(0, n, b):
                yield epoch, order[i:i + b]

    def steps_per_round(self, client: int) -> int:
        n = len(self.partition.client_indices[client])
        b = n if self.batch_size is None else min(self.batch_size, n)
        return self.local_epochs * math.ceil(n / b)

    # -- the loop ------------------------------------------------------------------------
    def evaluate(self) -> tuple[float, float]:
        """Test accuracy and loss of the current global model."""
        return evaluate(self.global_model, self.test)

    def stop(self) -> None:
        """Ask a running :meth:`run` or :meth:`rounds` to stop after the current round.

        Safe to call from another thread (a Stop button).
        """
        self._stop.set()

    def reset(self) -> None:
        """Back to the initial global model and an empty history."""
        self.global_model.load_state_dict(self._initial_state)
        self.round = 0
        self.history = History(config=self.config(), label=self.default_label())

    def rounds(self, n: int) -> Iterator[RoundRecord]:
        """Train ``n`` more rounds, yielding a :class:`RoundRecord` after each.

        A UI can draw between rounds and stop by breaking out of the loop or calling
        :meth:`stop`. Stops early, with ``history.stop_reason`` set, if training
        diverges (a NaN or infinite loss).
        """
        n = _check_int("rounds", n, 1)
        self._stop.clear()
        self.history.stop_reason = None
        params = [p for p in self.global_model.parameters()]
        end = self.round + n
        while self.round < end:
            if self._stop.is_set():
                self.history.stop_reason = f"stopped by the user after round {self.round}"
                return
            r = self.round + 1
            t0 = time.perf_counter()
            clients = self.sample_clients(r)
            with _threads(self.num_threads):
                new_params, train_loss = self.engine.train_round(r, clients)
                finite = math.isfinite(train_loss) and all(
                    bool(torch.isfinite(p).all()) for p in new_params)
                if finite:
                    with torch.no_grad():
                        torch._foreach_copy_(params, new_params)
                if finite and (r % self.eval_every == 0 or r == end):
                    acc, loss = self.evaluate()
                else:
                    acc, loss = float("nan"), float("nan")
            down = self.num_parameters * BYTES_PER_PARAMETER * len(clients)
            samples = self.local_epochs * sum(len(self.partition.client_indices[k]) for k in clients)
            rec = RoundRecord(round=r, accuracy=acc, loss=loss, train_loss=train_loss,
                              clients=clients, bytes_down=down, bytes_up=down,
                              seconds=time.perf_counter() - t0, samples=samples)
            self.round = r
            self.history.records.append(rec)
            if not finite:
                # keep the last good global model so that the simulation stays usable
                self.history.stop_reason = (
                    f"diverged at round {r}: the training loss became {train_loss} "
                    f"(lr={self.lr:g} is probably too large; try a smaller lr)")
                yield rec
                return
            yield rec

    def run(self, rounds: int, *, target_accuracy: float | None = None,
            callback: Callable[[RoundRecord], object] | None = None, progress: bool = False) -> History:
        """Train ``rounds`` more rounds and return the (cumulative) history.

        Parameters
        ----------
        rounds : int
            At least 1.
        target_accuracy : float, optional
            Stop as soon as the test accuracy reaches this value, in (0, 1].
        callback : callable, optional
            Called with each :class:`RoundRecord` as it is made.
        progress : bool, default False
            Show a tqdm progress bar.
        """
        rounds = _check_int("rounds", rounds, 1)
        if target_accuracy is not None:
            target_accuracy = _check_number("target_accuracy", target_accuracy, 0.0, 1.0,
                                            "in (0, 1]", lo_open=True)
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=rounds, unit="round", leave=True)
        try:
            for rec in self.rounds(rounds):
                if callback is not None:
                    callback(rec)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(acc=f"{rec.accuracy:.4f}")
                if target_accuracy is not None and rec.accuracy >= target_accuracy:
                    self.history.stop_reason = (f"target accuracy {target_accuracy:g} reached "
                                                f"at round {rec.round}")
                    break
        finally:
            if bar is not None:
                bar.close()
        return self.history


@contextlib.contextmanager
def _threads(n: int | None):
    """Run the block with ``n`` torch intra-op threads, then restore the setting."""
    before = torch.get_num_threads()
    if n is not None and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _check_int(name, value, lo, none_ok=""):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}{none_ok}; got {value!r}")
    return int(value)


def _check_number(name, value, lo, hi, desc, lo_open=False):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number {desc}; got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(v) or v > hi or v < lo or (lo_open and v == lo):
        raise ValueError(f"{name} must be a number {desc}; got {value!r}")
    return v


from . import vectorized as _vectorized  # noqa: E402,F401  registers ENGINES["vectorized"]
