"""What a run leaves behind: one :class:`RoundRecord` per round, gathered in a :class:`History`.

A history has per-round arrays (``history.accuracy``, ``history.bytes_total``, ...),
``rounds_to(target)`` and JSON save/load, so that runs can be compared, plotted
and kept.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["RoundRecord", "History", "accuracy_spread"]


@dataclass
class RoundRecord:
    """What happened in one round.

    ``accuracy`` and ``loss`` are the global model's on the test set after the
    round (NaN on rounds skipped by ``eval_every``); ``train_loss`` is the mean
    client training loss (each client's mean minibatch loss, weighted by its
    sample count); ``bytes_down`` / ``bytes_up`` count what the algorithm sends
    (float32 parameters, and for SCAFFOLD its control variates) times the
    sampled clients; ``update_norm`` is the mean L2 norm of the clients' updates
    ``x_k - x`` (how far local training moved them from the global model);
    ``epsilon`` is the privacy spent up to and including this round under
    differential privacy (NaN without it; infinite with zero noise).
    ``dropped`` and ``stragglers`` list the sampled clients that never reported
    and those that did only part of their local work; ``reported`` is the number
    of updates aggregated (``bytes_up`` counts only theirs); ``client_accuracy``
    is each client's accuracy on its local test set (empty unless the simulation
    has ``local_test_fraction``); ``note`` says why a round made no update;
    ``eval_size`` is how many test images ``accuracy`` and ``loss`` were measured
    on (the whole test set, a fixed subset for a cheap live estimate, or 0);
    ``clusters`` is, under IFCA, the cluster each client that trained joined (in the
    order of its sorted ids: the reporting clients of ``clients``); under differential
    privacy, ``clip_norm`` is the round's clip norm (adaptive clipping moves it) and ``clipped``
    the share of reporting clients whose update it clipped (the simulation's view: the server of
    adaptive clipping sees only a noisy count).
    With devices (:mod:`fedlab_widgets.clock`), ``sim_seconds`` is the round's simulated duration
    (the slowest reporting client's download, compute and upload, the deadline if one missed it,
    or the wait for a device to come online) and ``late`` the clients dropped for missing the
    deadline (also in ``dropped``, as are the clients that were offline). Asynchronous
    (FedAsync, FedBuff), ``staleness`` is how many versions late each aggregated update was
    (in the order of ``clients``).
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
    update_norm: float = float("nan")
    attack_success: float = float("nan")  # backdoor: triggered test images classified as target
    attackers: int = 0  # malicious clients among the sampled ones
    epsilon: float = float("nan")  # cumulative (epsilon, delta)-DP spent so far (NaN without DP)
    dropped: list[int] = field(default_factory=list)      # sampled, never reported
    stragglers: list[int] = field(default_factory=list)   # did only part of their local work
    reported: int = -1  # updates aggregated (-1: not recorded, i.e. every sampled client)
    client_accuracy: list[float] = field(default_factory=list)  # per client, local test sets
    note: str = ""
    eval_size: int = -1  # test images behind accuracy: 0 none, fewer than all an estimate (-1: old)
    clusters: list[int] = field(default_factory=list)  # IFCA: the cluster of each trained client
    clip_norm: float = float("nan")  # DP: this round's clip norm
    clipped: float = float("nan")    # DP: share of the reporting clients' updates clipped
    sim_seconds: float = float("nan")  # devices: the round's simulated duration (waits included)
    late: list[int] = field(default_factory=list)  # devices: dropped for missing the deadline
    staleness: list[int] = field(default_factory=list)  # asynchronous: versions late, per update


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
    def update_norm(self) -> np.ndarray:
        """Mean L2 norm of the client updates, per round."""
        return self._array("update_norm")

    @property
    def attack_success(self) -> np.ndarray:
        """A backdoor's attack success rate per round (NaN without one)."""
        return self._array("attack_success")

    @property
    def clip_norm(self) -> np.ndarray:
        """DP: each round's clip norm (NaN without DP); under adaptive clipping, its trajectory."""
        return self._array("clip_norm")

    @property
    def clipped(self) -> np.ndarray:
        """DP: the share of each round's updates that the clip norm cut (NaN without DP)."""
        return self._array("clipped")

    @property
    def staleness(self) -> np.ndarray:
        """Asynchronous runs: each round's mean staleness (versions late; NaN for none)."""
        return np.array([np.mean(r.staleness) if r.staleness else np.nan for r in self.records])

    @property
    def simulated_time(self) -> np.ndarray:
        """Devices: cumulative simulated seconds at the end of each round (NaN without devices);
        ``seconds`` is the real time each round took."""
        return np.cumsum(self._array("sim_seconds"))

    @property
    def epsilon(self) -> np.ndarray:
        """Cumulative DP epsilon after each round (NaN without differential privacy)."""
        return self._array("epsilon")

    @property
    def reported(self) -> np.ndarray:
        """Updates aggregated per round (sampled minus dropped, minus dropped stragglers)."""
        return np.array([len(r.clients) if r.reported < 0 else r.reported for r in self.records],
                        dtype=int)

    @property
    def client_accuracy(self) -> np.ndarray:
        """``[rounds, num_clients]``: each client's local test accuracy (NaN rows for rounds
        not evaluated; empty without per-client test sets)."""
        k = max((len(r.client_accuracy) for r in self.records), default=0)
        if not k:
            return np.zeros((len(self.records), 0))
        return np.array([r.client_accuracy if len(r.client_accuracy) == k else [np.nan] * k
                         for r in self.records], dtype=float)

    def client_spread(self) -> dict:
        """Per round: mean, 10th and 90th percentile and worst client local accuracy
        (arrays, NaN for rounds without per-client figures)."""
        rows = [accuracy_spread(r.client_accuracy) for r in self.records]
        return {key: np.array([row[key] for row in rows]) for key in ("mean", "p10", "p90", "worst")}

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
    def estimated(self) -> np.ndarray:
        """Per round: True where accuracy is an estimate on a subset of the test set."""
        full = max((r.eval_size for r in self.records), default=0)
        return np.array([0 < r.eval_size < full for r in self.records], dtype=bool)

    def _full_accuracy(self) -> np.ndarray:
        acc = self.accuracy
        return acc[np.isfinite(acc) & ~self.estimated]

    @property
    def final_accuracy(self) -> float:
        """The last test accuracy measured on the whole test set (NaN if none)."""
        acc = self._full_accuracy()
        return float(acc[-1]) if len(acc) else float("nan")

    @property
    def best_accuracy(self) -> float:
        acc = self._full_accuracy()
        return float(acc.max()) if len(acc) else float("nan")

    @property
    def diverged(self) -> bool:
        return bool(self.stop_reason and self.stop_reason.startswith("diverged"))

    def rounds_to(self, target: float, *, interpolate: bool = False) -> int | float | None:
        """Rounds until the test accuracy (on the whole test set) reached ``target``, or None.

        Parameters
        ----------
        target : float
            Test accuracy in [0, 1].
        interpolate : bool, default False
            False: the first round whose accuracy reached ``target`` (an int).
            True: McMahan et al.'s (2017) measure, a float. It reads the monotone
            curve (the best accuracy over all rounds so far) and interpolates
            linearly between the last evaluated round below ``target`` and the
            first at or above it. If the first evaluated round already reaches
            ``target`` there is nothing to interpolate from, and its round is returned.

        Examples
        --------
        >>> from fedlab_widgets.history import History, RoundRecord
        >>> h = History([RoundRecord(r, a, 0.5, 0.5, [0], 0, 0, 0.1)
        ...              for r, a in [(1, 0.90), (2, 0.96), (3, 0.95), (4, 0.98)]])
        >>> h.rounds_to(0.97), h.rounds_to(0.97, interpolate=True)
        (4, 3.5)
        """
        if isinstance(target, bool) or not isinstance(target, (int, float, np.integer, np.floating)) \
                or not 0.0 <= target <= 1.0:
            raise ValueError(f"target must be a test accuracy from 0 to 1 (0.97, not 97); got {target!r}")
        prev_round, prev_best = None, -np.inf
        for r, est in zip(self.records, self.estimated):
            if est or not np.isfinite(r.accuracy):
                continue
            if r.accuracy >= target:
                if not interpolate:
                    return r.round
                if prev_round is None:
                    return float(r.round)
                return float(prev_round + (r.round - prev_round)
                             * (target - prev_best) / (r.accuracy - prev_best))
            prev_round, prev_best = r.round, max(prev_best, r.accuracy)
        return None

    def to_dict(self) -> dict:
        return {"label": self.label, "config": self.config, "stop_reason": self.stop_reason,
                "records": [asdict(r) for r in self.records]}

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        return cls(records=[RoundRecord(**r) for r in d["records"]], config=d.get("config", {}),
                   label=d.get("label", ""), stop_reason=d.get("stop_reason"))

    def save(self, path) -> Path:
        """Write the history as JSON (NaN stored as null; numpy scalars as numbers)."""
        path = Path(path)
        if path.is_dir():
            raise ValueError(f"path {path} is a folder; give a file name, e.g. {path / 'history.json'}")
        if not path.parent.is_dir():
            raise ValueError(f"path {path}: its folder {path.parent} does not exist")
        path.write_text(json.dumps(_plain(self.to_dict()), indent=1))
        return path

    @classmethod
    def load(cls, path) -> "History":
        """Read a history written by :meth:`save`.

        Raises ValueError naming the file if it is not such a history.
        """
        path = Path(path)
        try:
            d = json.loads(path.read_text())
            for r in d["records"]:
                for k in ("accuracy", "loss", "train_loss", "update_norm", "attack_success",
                          "clip_norm", "clipped", "sim_seconds"):
                    if r.get(k) is None:
                        r[k] = float("nan")
                if r.get("client_accuracy"):
                    r["client_accuracy"] = [float("nan") if a is None else a
                                            for a in r["client_accuracy"]]
                if "epsilon" in r and r["epsilon"] is None:   # inf and NaN are both saved as null
                    r["epsilon"] = float("inf") if d.get("config", {}).get(
                        "dp_params", {}).get("noise_multiplier") == 0 else float("nan")
            return cls.from_dict(d)
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{path} is not a history saved by History.save "
                             f"({type(e).__name__}: {e})") from None

    def summary(self) -> str:
        """One line: final accuracy, rounds, seconds, megabytes, stop reason."""
        s = (f"{self.label or 'run'}: {len(self)} rounds, final accuracy "
             f"{self.final_accuracy:.4f}, {self.seconds.sum():.1f} s, "
             f"{self.bytes_total[-1] / 1e6 if len(self) else 0:.1f} MB communicated")
        if len(self) and not math.isnan(self.records[-1].epsilon):
            s += f", epsilon {self.records[-1].epsilon:.3g}"
        return s + (f" ({self.stop_reason})" if self.stop_reason else "")


def accuracy_spread(acc) -> dict:
    a = np.asarray(acc, dtype=float)
    a = a[np.isfinite(a)]
    if not len(a):
        return {"mean": math.nan, "p10": math.nan, "p90": math.nan, "worst": math.nan}
    return {"mean": float(a.mean()), "p10": float(np.percentile(a, 10)),
            "p90": float(np.percentile(a, 90)), "worst": float(a.min())}


def _plain(x):
    """JSON-ready: numpy scalars as Python numbers, NaN and infinities as None."""
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x
