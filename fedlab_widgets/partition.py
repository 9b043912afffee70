"""Split a dataset's sample indices among simulated clients (IID and non-IID).

``partition(labels, scheme, num_clients, seed=..., **params)`` returns a
:class:`Partition`, a list of disjoint index sets, one per client.

Schemes
-------
``iid``
    Uniformly random, equal sizes (differing by at most one).
``shards``
    McMahan et al. (2017): sort the samples by label, cut the sorted order into
    ``num_clients * shards_per_client`` contiguous shards, deal the shards out at
    random, ``shards_per_client`` to each client (default 2, so 100 clients get 200
    shards of 300 MNIST images and most clients see two digits). Remainder rule:
    when the shards do not divide the dataset evenly, shard sizes differ by at most
    one sample (``numpy.array_split``); no sample is dropped.
``dirichlet``
    Label skew: for every class, the proportions going to each client are drawn
    from Dirichlet(``alpha``); the draw is repeated until every client holds at
    least ``min_size`` samples (default 10). Large ``alpha`` approaches IID,
    ``alpha=0.1`` is severe.
``label_count``
    Every client holds exactly ``classes_per_client`` labels, chosen at random but
    balanced so that the numbers of clients holding each label differ by at most
    one; each label's samples are split evenly among the clients holding it.
    Remainder rule: when ``num_clients * classes_per_client`` is smaller than the
    number of classes, the labels nobody holds are left out.
``quantity``
    Quantity skew: IID labels, client sizes proportional to log-normal draws with
    spread ``sigma`` (0 gives equal sizes), each at least ``min_size``.
``powerlaw``
    Label *and* quantity skew, as in the FedProx paper's MNIST set-up (Li et al.
    2020: 1000 devices, 2 digits each, power-law sizes): every client holds
    ``classes_per_client`` labels (chosen as in ``label_count``) and wants
    ``min_size`` plus a Pareto(``exponent``) share of the data; each label's
    samples are split among its holders in proportion to what they want. A
    smaller ``exponent`` gives a heavier tail (a few very large clients).
``writer``
    MNIST's real writers (QMNIST's extended labels; needs the dataset, not its labels):
    one client per writer when ``num_clients`` is left out (539 clients of 19 to 131
    digits), else ``num_clients`` groups of whole writers (never a writer split across
    clients), the writers shuffled by ``seed`` and dealt into groups whose numbers of
    writers differ by at most one. ``population`` keeps only Census employees' or
    high-school students' digits (the others belong to no client).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch

from .features import feature_skew
from .params import Param
from .schemes import PARTITION_SCHEMES, SCHEME_PARAMETERS, SCHEMES

__all__ = ["partition", "Partition", "SCHEMES", "SCHEME_PARAMETERS", "PARTITION_SCHEMES",
           "check_labels", "check_federation", "feature_skew"]

@dataclass(eq=False)
class Partition:
    """Disjoint per-client index sets into one dataset.

    Attributes
    ----------
    client_indices : list of torch.Tensor
        One 1-D int64 tensor of sample indices per client.
    labels : torch.Tensor
        The labels the partition was made from (int64, ``[N]``).
    num_classes : int
    scheme : str
    params : dict
        The scheme's parameters as used (defaults filled in).
    seed : int
    """

    client_indices: list[torch.Tensor]
    labels: torch.Tensor = field(repr=False)
    num_classes: int
    scheme: str
    params: dict
    seed: int
    #: the writers of each client (writer schemes), else None
    client_writers: list | None = field(default=None, repr=False)
    #: the images of the partitioned dataset when one was given (for feature-skew numbers)
    images: torch.Tensor | None = field(default=None, repr=False)
    _memo: dict = field(default_factory=dict, init=False, repr=False)

    @property
    def num_clients(self) -> int:
        return len(self.client_indices)

    @property
    def sizes(self) -> torch.Tensor:
        """Number of samples per client (int64, ``[num_clients]``)."""
        return torch.tensor([len(ix) for ix in self.client_indices], dtype=torch.int64)

    @property
    def num_samples(self) -> int:
        return int(self.sizes.sum())

    def label_counts(self) -> torch.Tensor:
        """Samples of each class per client, int64 ``[num_clients, num_classes]``."""
        out = torch.zeros(self.num_clients, self.num_classes, dtype=torch.int64)
        for k, ix in enumerate(self.client_indices):
            out[k] = torch.bincount(self.labels[ix], minlength=self.num_classes)
        return out

    def heterogeneity(self) -> dict:
        """Summary numbers of how non-IID the partition is.

        Returns
        -------
        dict
            ``label_tv``: mean total-variation distance between each client's label
            distribution and the global one (0 for IID, near 1 for one-label
            clients); ``effective_classes``: mean over clients of the exponential of
            their label entropy (10 for balanced MNIST clients, 1 for one label);
            ``size_cv``: coefficient of variation of client sizes (0 for equal
            sizes); ``min_size``, ``max_size``, ``mean_size``. Made from a dataset (so
            its images are known), also ``feature_skew`` and ``pixel_spread_skew``: how
            far clients' handwriting is from everyone's (see :func:`feature_skew`).
        """
        counts = self.label_counts().to(torch.float64)
        sizes = counts.sum(1)
        p = counts / sizes[:, None]
        g = counts.sum(0) / counts.sum()
        tv = 0.5 * (p - g).abs().sum(1)
        logp = torch.where(p > 0, p.log(), torch.zeros_like(p))
        eff = torch.exp(-(p * logp).sum(1))
        mean = sizes.mean()
        cv = sizes.std(unbiased=False) / mean if self.num_clients > 1 else torch.tensor(0.0)
        out = {
            "label_tv": float(tv.mean()),
            "effective_classes": float(eff.mean()),
            "size_cv": float(cv),
            "min_size": int(sizes.min()),
            "max_size": int(sizes.max()),
            "mean_size": float(mean),
        }
        if self.images is not None:
            if "feature_skew" not in self._memo:
                self._memo["feature_skew"] = feature_skew(self, self.images, spread=True)
            out["feature_skew"], out["pixel_spread_skew"] = self._memo["feature_skew"]
        return out

    def with_images(self, images: torch.Tensor) -> "Partition":
        """The same partition, its feature-skew numbers measured on ``images``."""
        from dataclasses import replace
        return replace(self, images=images)

    def fingerprint(self) -> str:
        """A short hash of the assignment: equal iff the partitions are equal."""
        h = hashlib.sha256()
        for ix in self.client_indices:
            h.update(ix.numpy().astype("<i8").tobytes())
            h.update(b"|")
        return h.hexdigest()[:12]

    def label(self) -> str:
        """A short name such as ``dirichlet(alpha=0.3), 100 clients``."""
        ps = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in self.params.items() if k != "min_size")
        n = f"{self.num_clients} client{'s' if self.num_clients != 1 else ''}"
        return f"{self.scheme}({ps}), {n}" if ps else f"{self.scheme}, {n}"

    def describe(self, max_rows: int = 10) -> str:
        """A compact, deterministic text table for notebooks.

        Shows the heterogeneity numbers, then one row per client (the first
        ``max_rows``) with its size, label counts and dominant label share.
        """
        h = self.heterogeneity()
        counts = self.label_counts()
        lines = [
            f"Partition {self.label()}, seed={self.seed}, fingerprint {self.fingerprint()}",
            f"  samples {self.num_samples}, client sizes min {h['min_size']} / mean "
            f"{h['mean_size']:.1f} / max {h['max_size']} (CV {h['size_cv']:.2f})",
            f"  label skew: mean TV distance {h['label_tv']:.3f}, "
            f"effective classes per client {h['effective_classes']:.2f} of {self.num_classes}",
        ]
        if "feature_skew" in h:
            lines.append(f"  feature skew: a client's mean image per class is {h['feature_skew']:.3f} "
                         f"from the population's (RMS per pixel, sampling noise removed); "
                         f"pixel spread {h['pixel_spread_skew']:.3f}")
        if self.client_writers is not None:
            w = [len(g) for g in self.client_writers]
            lines.append(f"  writers per client: {min(w)} to {max(w)}")
        width = max(5, len(str(int(counts.max()))) + 1)
        head = "  client  size | " + "".join(f"{c:>{width}}" for c in range(self.num_classes))
        lines += [head, "  " + "-" * (len(head) - 2)]
        for k in range(min(self.num_clients, max_rows)):
            row = "".join(f"{int(v):>{width}}" for v in counts[k])
            lines.append(f"  {k:>6} {int(counts[k].sum()):>5} | {row}")
        if self.num_clients > max_rows:
            lines.append(f"  ... {self.num_clients - max_rows} more clients")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Partition({self.label()}, seed={self.seed}, fingerprint={self.fingerprint()})"


def check_labels(labels, name: str = "labels", *, num_samples: int | None = None) -> torch.Tensor:
    """``labels`` as a 1-D integer tensor of class indices, or a ValueError naming ``name``.

    One label per sample (``num_samples`` of them, if given), integers >= 0; one-hot,
    float and bool labels are refused rather than reshaped or truncated.

    Examples
    --------
    >>> check_labels(torch.tensor([0, 2, 1])).tolist()
    [0, 2, 1]
    >>> check_labels(torch.eye(3), "train.labels")
    Traceback (most recent call last):
    ...
    ValueError: train.labels must be a 1-D tensor of integer class labels; got dtype torch.float32 and shape (3, 3) (one-hot labels: use labels.argmax(1))
    """
    if labels is None or isinstance(labels, (str, bytes)):
        raise ValueError(f"{name} must be a 1-D tensor of integer class labels; got {labels!r}")
    try:
        labels = torch.as_tensor(labels)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be a 1-D tensor of integer class labels; got "
                         f"{type(labels).__name__}") from None
    if labels.dim() != 1 or labels.is_floating_point() or labels.is_complex() \
            or labels.dtype == torch.bool:
        raise ValueError(f"{name} must be a 1-D tensor of integer class labels; got dtype "
                         f"{labels.dtype} and shape {tuple(labels.shape)} (one-hot labels: "
                         f"use labels.argmax(1))")
    if num_samples is not None and len(labels) != num_samples:
        raise ValueError(f"{name} must hold one label per sample: {len(labels)} labels for "
                         f"{num_samples} samples")
    if len(labels) and int(labels.min()) < 0:
        raise ValueError(f"{name} must be class indices >= 0; got {int(labels.min())}")
    return labels


def partition(labels, scheme: str = "iid", num_clients: int | None = None, *, seed: int = 0,
              num_classes: int | None = None, **params) -> Partition:
    """Partition sample indices among ``num_clients`` clients.

    Parameters
    ----------
    labels : torch.Tensor or array-like of int, or a dataset with ``.labels``
        The label of every sample. Scheme ``"writer"`` needs the dataset (MNIST from
        :func:`~fedlab_widgets.load_mnist`, which knows its writers); given a dataset,
        the partition also measures feature skew (its images).
    scheme : {"iid", "shards", "dirichlet", "label_count", "quantity", "powerlaw", "writer"}
    num_clients : int, optional
        At least 1 and at most the number of samples (the number of writers for
        ``"writer"``). Default: 100, or one client per writer for ``"writer"``.
    seed : int
        Same seed, same partition.
    num_classes : int, optional
        Defaults to ``max(labels) + 1``.
    **params
        The scheme's parameters: ``shards_per_client`` (shards), ``alpha`` and
        ``min_size`` (dirichlet), ``classes_per_client`` (label_count), ``sigma``
        and ``min_size`` (quantity), ``exponent``, ``classes_per_client`` and
        ``min_size`` (powerlaw). See the module docstring.

    Returns
    -------
    Partition

    Raises
    ------
    ValueError
        Unknown scheme or parameter, or a value outside its valid range; the
        message names the parameter and the range.

    Examples
    --------
    >>> import torch
    >>> from fedlab_widgets import partition
    >>> labels = torch.arange(1000) % 10
    >>> p = partition(labels, "shards", 50, seed=0)
    >>> p.num_clients, int(p.sizes.sum())
    (50, 1000)
    >>> round(p.heterogeneity()["effective_classes"], 1) <= 2.0
    True
    """
    data = labels if hasattr(labels, "labels") else None
    if data is not None:
        labels = data.labels
    labels = check_labels(labels).to(torch.int64)
    n = int(labels.shape[0])
    full = PARTITION_SCHEMES.check_params(PARTITION_SCHEMES.check(scheme), params)
    if n == 0:
        raise ValueError("labels must not be empty")
    needs = PARTITION_SCHEMES.trait(scheme, "needs", ())
    if num_clients is None and not needs:
        num_clients = 100
    if num_clients is not None and (isinstance(num_clients, bool) or not isinstance(
            num_clients, (int, np.integer)) or not 1 <= num_clients <= n):
        raise ValueError(f"num_clients must be an integer from 1 to the number of samples "
                         f"({n}); got {num_clients!r}")
    num_clients = None if num_clients is None else int(num_clients)
    columns = {}
    if needs:
        if data is None:
            raise ValueError(f"scheme {scheme!r} needs the {' and '.join(needs)} of every sample: "
                             f"pass the dataset, as in partition(train, {scheme!r}), not its labels")
        columns = {c: getattr(data, c).numpy() for c in needs}   # a clear error if missing
    if num_classes is None:
        num_classes = int(labels.max()) + 1
    num_classes = Param("num_classes", 10, kind="int", lo=1,
                        doc="the number of classes (default: the largest label + 1)").check(num_classes)
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(f"labels must lie in 0..{num_classes - 1} (num_classes={num_classes})")
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0; got {seed!r}")
    seed = int(seed)
    rng = np.random.default_rng(seed)
    y = labels.numpy()
    parts = PARTITION_SCHEMES[scheme](y, num_clients, rng, num_classes=num_classes, **full,
                                      **columns)
    idx = [torch.from_numpy(np.sort(np.asarray(p, dtype=np.int64))) for p in parts]
    who = None
    if "writers" in columns:
        who = [np.unique(columns["writers"][ix.numpy()]) for ix in idx]
    images = getattr(data, "images", None)
    return Partition(client_indices=idx, labels=labels, num_classes=num_classes,
                     scheme=scheme, params=full, seed=seed, client_writers=who,
                     images=images if isinstance(images, torch.Tensor) else None)


def check_federation(partition, train, test) -> None:
    """A ValueError unless ``partition`` splits ``train`` and both datasets hold images and
    labels (what a :class:`~fedlab_widgets.Simulation` is built from)."""
    if not isinstance(partition, Partition):
        raise ValueError(f"partition must be a Partition (see fedlab_widgets.partition); "
                         f"got {type(partition).__name__}")
    for what, data in (("train", train), ("test", test)):
        if not (hasattr(data, "images") and hasattr(data, "labels")):
            raise ValueError(f"{what} must be a dataset with .images and .labels (see "
                             f"load_mnist); got {type(data).__name__}")
        if not isinstance(data.labels, torch.Tensor):
            raise ValueError(f"{what}.labels must be a tensor; got {type(data.labels).__name__}")
        check_labels(data.labels, f"{what}.labels", num_samples=len(data.images))
    skew = getattr(train, "feature_skew", None) or {}
    if "partition" in skew and skew["partition"] != partition.fingerprint():
        raise ValueError("train was feature-skewed for another partition (skew_features(train, "
                         "partition) must be given the partition the Simulation uses)")
    if partition.labels.shape[0] != len(train.labels) or not torch.equal(
            partition.labels, train.labels):
        raise ValueError("partition must be made from the training labels it is used with "
                         f"(partition has {partition.labels.shape[0]} samples, "
                         f"train has {len(train.labels)})")
