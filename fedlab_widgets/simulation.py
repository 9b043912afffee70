"""The federated simulation: a global model, clients holding a partition, a round loop.

:class:`Simulation` holds the state (the global model, the server's and the clients'
state, the history) and runs rounds; one round is :func:`fedlab_widgets.round.play_round`
(sample, train, client steps, aggregate, server steps, server optimiser, evaluate), whose
server half the Flower server runs too. The settings are a
:class:`~fedlab_widgets.config.RunConfig`, checked once.

With the default algorithm this is FedAvg as in McMahan et al. 2017 (Algorithm 1):
each sampled client runs ``local_epochs`` of minibatch SGD over its own shuffled
data and the server replaces the global model with the sample-weighted average
of the client models.

Clients are simulated, not separate processes: a client's data is a slice of the
shared in-memory training tensors (no DataLoader, no deep copy of a module per
client). How the sampled clients are trained is an *engine*
(:mod:`fedlab_widgets.engines`); every engine receives the same schedule, so
engines agree up to float rounding.

Randomness: the initial weights (when ``model`` is a name), the clients sampled in
round ``r`` and client ``k``'s data order in epoch ``e`` of round ``r`` are each
drawn from a generator seeded with ``(seed, r, k, e)``, so the same seed gives the
same history, however the run is split into calls.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
from typing import Callable, Iterator

import numpy as np
import torch

from . import algorithms as _algorithms
from . import attacks as _attacks
from . import compression as _compression
from . import describe as _describe
from .algorithms.compat import check_compatible
from .algorithms.fedper import head_slice
from .personalisation import client_accuracy, split_local_test
from .algorithms import Algorithm, ClientStore
from .engines import ENGINES, FlatLayout, Schedule, get_engine, sgd_steps
from .history import History, RoundRecord
from .models import as_model, count_parameters
from .partition import Partition, check_federation
from .config import RUN_PARAMETERS, RunConfig, run_parameter, settings_doc
from .evaluation import Subset, evaluate, evaluate_each
from .asynchronous import asynchronous_kind, check_asynchronous, play_async_round
from .clock import check_deadline, make_devices, split_devices
from .round import play_whole_round, round_context
from .selection import check_selection, select_clients
from .seeds import generator
from .threads import default_num_threads, resolve_num_threads

__all__ = ["Simulation", "History", "RoundRecord", "evaluate", "ENGINES", "sgd_steps",
           "default_num_threads"]



def _set_up_time(sim, cfg: RunConfig, table) -> None:
    """The devices, deadline, client selection and asynchrony of ``sim``, checked together."""
    sim.devices = make_devices(cfg.devices, table, sim.num_clients, seed=sim.seed)
    sim.deadline, sim.selection, sim.candidates = cfg.deadline, cfg.selection, cfg.candidates
    check_selection(sim.selection, sim.candidates, sim.devices, num_clients=sim.num_clients,
                    clients_per_round=sim.clients_per_round)
    sim.asynchronous = asynchronous_kind(sim.algorithm)   # fedasync, fedbuff or None
    if sim.asynchronous:
        check_asynchronous(sim)
    down, up = sim.bytes_per_client()
    check_deadline(sim.deadline, sim.devices, sizes=sim.partition.sizes.numpy(),
                   local_epochs=sim.local_epochs, bytes_down=down, bytes_up=up)


class Simulation:
    """A federated simulation: a global model, clients holding a partition, a round loop.

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
    algorithm : str or Algorithm, default "fedavg"
        What happens to the client updates: a name from
        :data:`fedlab_widgets.algorithms.NAMES` (its default parameters) or an
        :class:`~fedlab_widgets.algorithms.Algorithm` from
        :func:`fedlab_widgets.algorithms.get`.
    attack : str or Attack, optional
        Malicious clients (:func:`fedlab_widgets.attacks.get`): a fraction of the
        clients, chosen once from ``seed``, attack whenever they are sampled.
    compression : str or Compressor, optional
        What clients send instead of their full update
        (:func:`fedlab_widgets.compression.get`: top-k with error feedback,
        random-k, QSGD); ``bytes_up`` counts what is really sent.
    config : RunConfig, optional
        The run's settings; keyword settings below override it.
{settings}
    ``rounds`` and ``target_accuracy`` are what :meth:`run` does when not told.
    With ``dropout`` a sampled client never reports; with ``stragglers`` a reporting
    client does only part of its local steps (:mod:`fedlab_widgets.systems`). With
    ``local_test_fraction`` in (0, 1) each client holds out that share of its data
    (seeded) as a local test set and every evaluated round records the global
    model's accuracy on each client's (:mod:`fedlab_widgets.personalisation`).
    ``eval_subset`` estimates, on the rounds between whole-test-set evaluations, are
    drawn hollow by the plots and never count for ``history.rounds_to`` or
    ``final_accuracy``. ``num_threads="auto"`` is :func:`default_num_threads`: one
    core is kept free because OpenMP threads spin while they wait for each other
    (see bench/README.md).

    Examples
    --------
    >>> from fedlab_widgets import load_mnist, partition, Simulation
    >>> train, test = load_mnist()
    >>> parts = partition(train.labels, "iid", 10, seed=0)
    >>> sim = Simulation("2nn", train, test, parts, client_fraction=0.5, lr=0.05)
    >>> history = sim.run(2)
    >>> bool(history.accuracy[-1] > 0.85)
    True
    >>> Simulation("2nn", train, test, parts, algorithm="scaffold").history.label[:8]
    'scaffold'
    """

    def __init__(self, model, train, test, partition: Partition, *,
                 algorithm: str | Algorithm | None = None, attack=None, compression=None,
                 config: RunConfig | None = None, **settings):
        if config is not None and not isinstance(config, RunConfig):
            raise ValueError(f"config must be a RunConfig; got {type(config).__name__}")
        settings, table = split_devices(settings)
        cfg = RunConfig(**settings) if config is None else config.replace(**settings)
        self.settings = cfg
        self.client_fraction, self.local_epochs = cfg.client_fraction, cfg.local_epochs
        self.batch_size, self.lr, self.seed = cfg.batch_size, cfg.lr, cfg.seed
        self.eval_every = cfg.eval_every
        self.num_threads = resolve_num_threads(cfg.num_threads)
        self.algorithm = _algorithms.resolve(algorithm)
        self.attack = _attacks.resolve(attack)
        self.dropout, self.stragglers = cfg.dropout, cfg.stragglers
        self.straggler_work = cfg.straggler_work
        self.straggler_mode = cfg.straggler_mode if cfg.straggler_mode != "auto" else \
            _algorithms.ALGORITHMS.trait(self.algorithm.name, "stragglers", "partial")
        self.compression = _compression.resolve(compression)
        check_compatible(self.algorithm, self.compression)
        self.local_test_fraction = cfg.local_test_fraction
        check_federation(partition, train, test)
        if self.attack is not None:
            self.attack.check_data(train)
        self.train, self.test = train, test
        self.eval_subset = self.test_subset = None
        if cfg.eval_subset is not None:
            n_test = len(test.labels)  # the table's range, capped by the test set's size
            self.eval_subset = dataclasses.replace(run_parameter("eval_subset"),
                                                   hi=n_test).check(cfg.eval_subset)
            ix = torch.randperm(n_test, generator=generator(self.seed, 9))[:self.eval_subset]
            self.test_subset = Subset(test, ix.sort().values)
        self.full_partition = partition
        self.local_test: list[torch.Tensor] | None = None
        if self.local_test_fraction:
            partition, self.local_test = split_local_test(partition, self.local_test_fraction,
                                                          seed=self.seed)
        self.partition = partition   # what clients train on
        self.global_model, self.model_name = as_model(model, seed=self.seed)
        self.global_model.train()
        self.initial_state = copy.deepcopy(self.global_model.state_dict())
        self.num_parameters = count_parameters(self.global_model)
        self.num_clients = partition.num_clients
        self.clients_per_round = max(round(self.client_fraction * self.num_clients), 1)
        self.algorithm.validate(self.clients_per_round, lr=self.lr)
        _set_up_time(self, cfg, table)
        self.malicious = frozenset() if self.attack is None else \
            self.attack.choose(self.num_clients, self.seed)
        self.layout = FlatLayout(self.global_model)
        self.head = head_slice(self.layout) if self.algorithm.fedper is not None else None
        self.engine_name = cfg.engine
        self.engine = get_engine(cfg.engine, self.global_model, train)
        self.total_samples = int(partition.sizes.sum())
        self.max_samples = int(partition.sizes.max())
        self._stop = threading.Event()
        self._busy = threading.Lock()
        self.round = 0
        self.reset()

    # -- description ---------------------------------------------------------------
    def config(self) -> dict:
        """The settings of this simulation, as stored in its history: the run settings
        (:meth:`RunConfig.to_dict`, with ``straggler_mode``, ``engine`` and ``num_threads``
        resolved), the data, the algorithm, attack, compression and devices."""
        return _describe.run_config(self)

    @property
    def feature_skew(self) -> dict:
        """The training data's feature skew (rotation, noise, seed) as
        :func:`~fedlab_widgets.features.skew_features` made it, or ``{}``."""
        return _describe.feature_skew(self)

    def default_label(self) -> str:
        return _describe.default_label(self)
    # -- randomness shared by all engines ----------------------------------------------
    def sample_clients(self, round_: int) -> list[int]:
        """The clients sampled in ``round_`` (sorted), without replacement (``selection``:
        :mod:`fedlab_widgets.selection`)."""
        if self.selection != "uniform":
            return select_clients(self, round_)
        g = generator(self.seed, 1, round_)
        return sorted(torch.randperm(self.num_clients, generator=g)[:self.clients_per_round].tolist())

    def client_order(self, round_: int, client: int, epoch: int) -> torch.Tensor:
        """Client ``client``'s training indices in the order of epoch ``epoch`` of ``round_``."""
        ix = self.partition.client_indices[client]
        g = generator(self.seed, 2, round_, client, epoch)
        return ix[torch.randperm(len(ix), generator=g)]

    def bytes_per_client(self) -> tuple[int, int]:
        """What one client downloads and uploads in a round (after compression), in bytes."""
        down, up = self.algorithm.bytes_per_client(self.num_parameters, self.clients_per_round)
        return down, (up if self.compression is None else self.compression.bytes_up(self.num_parameters))

    def make_schedule(self, round_: int, clients: list[int]) -> Schedule:
        """The minibatches of ``clients`` in ``round_``: E shuffled passes, batches of B."""
        orders = [[self.client_order(round_, k, e) for e in range(self.local_epochs)]
                  for k in clients]
        return Schedule.from_orders(clients, orders, batch_size=self.batch_size)

    # -- the loop ------------------------------------------------------------------------
    def evaluate(self, dataset=None) -> tuple[float, float]:
        """Accuracy and loss of the global model on ``dataset`` (default: the test set);
        under IFCA, of the cluster model with the lowest loss on it."""
        dataset = self.test if dataset is None else dataset
        models = self.algorithm.test_models(self.context())
        if models is None:
            return evaluate(self.global_model, dataset)
        return min(evaluate_each(self.global_model, self.layout, models, dataset),
                   key=lambda acc_loss: acc_loss[1])

    def context(self):
        """The current :class:`~fedlab_widgets.algorithms.RoundContext` (model, state, clients)."""
        return round_context(self, self.round, self.layout.flatten(self.global_model.parameters()))

    def client_model(self, client: int) -> torch.Tensor:
        """Client ``client``'s model, flat ``[D]``: the global model, or its own (FedPer's
        global base with its head, Ditto's personal model, IFCA's cluster model)."""
        ctx = self.context()
        return self.algorithm.client_models([client], ctx).get(client, ctx.x)

    def client_accuracy(self) -> np.ndarray:
        """Accuracy of each client's model (see :meth:`client_model`) on its local test set.

        Needs ``local_test_fraction``; NaN for a client without local test samples.
        """
        if self.local_test is None:
            raise ValueError("client_accuracy needs per-client test sets: build the Simulation "
                             "with local_test_fraction (for example 0.2)")
        with torch.no_grad():
            personal = self.algorithm.client_models(range(self.num_clients), self.context())
        return client_accuracy(self.global_model, self.train, self.local_test, personal=personal)

    def stop(self) -> None:
        """Ask a running :meth:`run` or :meth:`rounds` to stop after the current round.

        Safe to call from another thread (a Stop button).
        """
        self._stop.set()

    def reset(self) -> None:
        """Back to the initial global model, an empty history and no algorithm state."""
        if self._busy.locked():
            raise RuntimeError("cannot reset while a run is in progress: stop it first")
        self.global_model.load_state_dict(self.initial_state)
        self.round, self.sim_time = 0, 0.0   # rounds played; simulated seconds (with devices)
        self.server_state: dict = {}        # server optimiser moments, SCAFFOLD's c, ...
        self.client_store = ClientStore()   # per-client state (SCAFFOLD's c_k, ...)
        self.history = History(config=self.config(), label=self.default_label())

    def rounds(self, n: int) -> Iterator[RoundRecord]:
        """Train ``n`` more rounds, yielding a :class:`RoundRecord` after each.

        A UI can draw between rounds and stop by breaking out of the loop or calling
        :meth:`stop`. Stops early, with ``history.stop_reason`` set, if training
        diverges (a NaN or infinite loss). A second run of the same simulation
        while one is in progress (another thread) is refused with RuntimeError.
        """
        n = run_parameter("rounds").check(n)
        if not self._busy.acquire(blocking=False):
            raise RuntimeError("this simulation is already running in another thread; "
                               "stop it (sim.stop()) or wait for it before running it again")
        try:
            self._stop.clear()
            self.history.stop_reason = None
            end = self.round + n
            while self.round < end:
                if self._stop.is_set():
                    self.history.stop_reason = f"stopped by the user after round {self.round}"
                    return
                full = (self.round + 1) % self.eval_every == 0 or self.round + 1 == end
                rec = play_whole_round(self, self.round + 1, evaluate=full,
                                       estimate=not full and self.test_subset is not None,
                                       play=play_async_round if self.asynchronous else None)
                self.round = rec.round
                if self.devices is not None:
                    self.sim_time += rec.sim_seconds
                self.history.records.append(rec)
                yield rec
                if self.history.diverged:
                    return
        finally:
            self._busy.release()

    def run(self, rounds: int | None = None, *, target_accuracy: float | None = None,
            callback: Callable[[RoundRecord], object] | None = None, progress: bool = False) -> History:
        """Train ``rounds`` more rounds and return the (cumulative) history.

        Parameters
        ----------
        rounds : int, optional
            At least 1 (default: the ``rounds`` setting).
        target_accuracy : float, optional
            Stop as soon as the test accuracy reaches this value, in (0, 1]
            (default: the ``target_accuracy`` setting).
        callback : callable, optional
            Called with each :class:`RoundRecord` as it is made.
        progress : bool, default False
            Show a tqdm progress bar.
        """
        rounds = run_parameter("rounds").check(self.settings.rounds if rounds is None else rounds)
        if target_accuracy is None:
            target_accuracy = self.settings.target_accuracy
        target_accuracy = run_parameter("target_accuracy").check(target_accuracy)
        self.history.config.update(rounds=self.round + rounds, target_accuracy=target_accuracy)
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=rounds, unit="round", leave=True)
        gen = self.rounds(rounds)
        try:
            for rec in gen:
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
            gen.close()  # releases the run lock at once, also after a break
            if bar is not None:
                bar.close()
        return self.history


# the settings' docs, generated from the run table (one place for every front end's doc)
if Simulation.__doc__:   # None under python -OO
    Simulation.__doc__ = Simulation.__doc__.replace("{settings}", settings_doc(RUN_PARAMETERS))
