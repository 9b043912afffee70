"""MNIST and Fashion-MNIST as in-memory tensors.

Both datasets are read through torchvision's dataset classes once per process and
kept as normalised float32 tensors, so that a client's data is just a slice of
one shared tensor: no DataLoader, no per-client copies.

Where the files are looked for, first match wins:

1. the ``root`` argument;
2. the environment variable ``FEDLAB_DATA_DIR``;
3. ``<repository>/data`` (the ``data/`` folder beside the package), or
   ``~/.cache/fedlab_widgets`` when the package is installed outside a checkout.

torchvision's layout is used below the root: ``<root>/MNIST/raw/`` holds the four
MNIST files, ``<root>/FashionMNIST/raw/`` the four Fashion-MNIST files, and
``<root>/QMNIST/raw/`` QMNIST's two extended-label files, which give MNIST's digits their
writers (:mod:`fedlab_widgets.writers`).
"""

from __future__ import annotations

import gzip
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from . import tensor_cache
from . import writers as _writers

__all__ = [
    "FederatedDataset",
    "DatasetNotFoundError",
    "load_mnist",
    "load_fashion_mnist",
    "data_root",
]

_RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
# Debian's dataset-fashion-mnist ships the original gzip files here.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

_CACHE: dict[tuple[str, str], tuple["FederatedDataset", "FederatedDataset"]] = {}


class DatasetNotFoundError(FileNotFoundError):
    """The dataset files are missing or unreadable and could not be downloaded."""


@dataclass(eq=False)
class FederatedDataset:
    """A labelled image dataset held in memory as tensors.

    Attributes
    ----------
    images : torch.Tensor
        float32, shape ``[N, 1, 28, 28]``, normalised with the training mean/std.
    labels : torch.Tensor
        int64, shape ``[N]``.
    classes : list of str
        Class names, indexed by label.
    name : str
        ``"MNIST"`` or ``"FashionMNIST"``.
    split : str
        ``"train"`` or ``"test"``.
    columns : dict of str to torch.Tensor
        Extra per-sample columns: MNIST's ``"writers"`` and ``"series"`` when QMNIST's
        label files were found (read them as :attr:`writers` and :attr:`series`).
    feature_skew : dict or None
        How the images were transformed per client (:func:`~fedlab_widgets.features.skew_features`).
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str = "MNIST"
    split: str = "train"
    mean: float = field(default=0.0, repr=False)
    std: float = field(default=1.0, repr=False)
    columns: dict = field(default_factory=dict, repr=False)
    feature_skew: dict | None = field(default=None, repr=False)
    #: why there are no writers (a message), and how to get them on first use (downloads)
    missing_writers: str | None = field(default=None, repr=False)
    fetch_writers: Callable | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def _column(self, name: str) -> torch.Tensor:
        if name not in self.columns and self.fetch_writers is not None:
            fetch, self.fetch_writers = self.fetch_writers, None
            try:
                fetch()   # fills this dataset's columns (and its sibling's), or raises
            except _writers.WritersNotFoundError as e:
                self.missing_writers = str(e)
                raise
        if name not in self.columns:
            raise _writers.WritersNotFoundError(self.missing_writers or (
                f"{self.name} {self.split} has no {name} (only MNIST's digits have writers: "
                f"load them with load_mnist())"))
        col = self.columns[name]
        if len(col) != len(self.labels):
            raise ValueError(f"this dataset's {name} ({len(col)}) do not match its {len(self)} "
                             f"samples: take subsets with dataset.subset(indices), which keeps "
                             f"the columns in step")
        return col

    def subset(self, indices) -> "FederatedDataset":
        """The samples at ``indices`` (images, labels and columns such as writers alike)."""
        ix = torch.as_tensor(indices, dtype=torch.int64)
        return replace(
            self, images=self.images[ix].contiguous(), labels=self.labels[ix].contiguous(),
            columns={k: v[ix] for k, v in self.columns.items()}, fetch_writers=None,
            feature_skew=None)

    @property
    def writers(self) -> torch.Tensor:
        """The NIST writer of every sample (int64 ``[N]``; MNIST only); when QMNIST's files
        are missing, a :class:`~fedlab_widgets.writers.WritersNotFoundError` says where to put them."""
        return self._column("writers")

    @property
    def series(self) -> torch.Tensor:
        """Every sample's NIST series (int64 ``[N]``: 0 = Census employees, 4 = students)."""
        return self._column("series")

    @property
    def has_writers(self) -> bool:
        """Whether :attr:`writers` is available (downloading it first if need be)."""
        try:
            self._column("writers")
        except _writers.WritersNotFoundError:
            return False
        return True

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        return (f"FederatedDataset({self.name} {self.split}: {len(self)} images "
                f"{tuple(self.images.shape[1:])}, {self.num_classes} classes)")


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Return the folder datasets are read from (see the module docstring)."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("FEDLAB_DATA_DIR")
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parent.parent
    if (repo / "pyproject.toml").exists():
        return repo / "data"
    return Path.home() / ".cache" / "fedlab_widgets"


def load_mnist(root: str | os.PathLike | None = None) -> tuple[FederatedDataset, FederatedDataset]:
    """Load MNIST as ``(train, test)`` in-memory datasets.

    Parameters
    ----------
    root : path, optional
        Folder holding ``MNIST/raw/``. Defaults to ``$FEDLAB_DATA_DIR``, then the
        repository's ``data/`` folder.

    Returns
    -------
    train, test : FederatedDataset
        60,000 and 10,000 images, normalised with the training mean and std. Each
        knows the writer of every digit (``train.writers``, ``train.series``) when
        QMNIST's label files are in ``<root>/QMNIST/raw/`` (downloaded on first use
        when online; see :mod:`fedlab_widgets.writers`): 539 training writers and 297
        other test writers.

    Raises
    ------
    DatasetNotFoundError
        The files are missing (and cannot be downloaded) or corrupt; the message
        names the files and the folder to put them in.

    Examples
    --------
    >>> from fedlab_widgets import load_mnist
    >>> train, test = load_mnist()
    >>> train.images.shape, test.labels.dtype
    (torch.Size([60000, 1, 28, 28]), torch.int64)
    """
    return _load("MNIST", root)


def load_fashion_mnist(root: str | os.PathLike | None = None) -> tuple[FederatedDataset, FederatedDataset]:
    """Load Fashion-MNIST as ``(train, test)`` in-memory datasets.

    Besides the usual roots, the gzip files of Debian's ``dataset-fashion-mnist``
    package (``/usr/share/datasets/fashion-mnist/``) are used when present; they
    are unpacked once into ``<root>/FashionMNIST/raw/``.

    Examples
    --------
    >>> from fedlab_widgets import load_fashion_mnist
    >>> train, test = load_fashion_mnist()  # doctest: +SKIP
    >>> train.classes[0]  # doctest: +SKIP
    'T-shirt/top'
    """
    return _load("FashionMNIST", root)


def _load(name: str, root) -> tuple[FederatedDataset, FederatedDataset]:
    base = data_root(root)
    key = (name, str(base.resolve()))
    if key not in _CACHE:
        train, test = _read(name, base)
        _writers.attach(train, test, base)
        _CACHE[key] = train, test
    return _CACHE[key]


def _missing(raw: Path) -> list[str]:
    return [f for f in _RAW_FILES if not (raw / f).is_file()]


def _unpack_debian_fashion(raw: Path) -> None:
    """Unpack Debian's Fashion-MNIST gzip files into ``raw`` if it lacks them."""
    if not DEBIAN_FASHION_MNIST.is_dir():
        return
    for f in _missing(raw):
        src = DEBIAN_FASHION_MNIST / (f + ".gz")
        if not src.is_file():
            continue
        raw.mkdir(parents=True, exist_ok=True)
        tmp = raw / (f + ".part")
        with gzip.open(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout)
        tmp.replace(raw / f)


def _from_cache(c: dict, name: str) -> tuple[FederatedDataset, FederatedDataset]:
    classes, mean, std = list(c["classes"]), float(c["mean"]), float(c["std"])
    return tuple(FederatedDataset(images=c[f"x_{s}"], labels=c[f"y_{s}"], classes=classes,
                                  name=name, split=split, mean=mean, std=std)
                 for s, split in (("tr", "train"), ("te", "test")))


def _read(name: str, base: Path) -> tuple[FederatedDataset, FederatedDataset]:
    """Parse the raw files once (torchvision), then keep a tensor copy that loads in ~0.1 s
    (memory-mapped: see :mod:`fedlab_widgets.tensor_cache`)."""
    cached = tensor_cache.read(name, base, _RAW_FILES)
    if cached is not None:
        return _from_cache(cached, name)
    from torchvision import datasets as tvd  # imported lazily: slow to import

    cls = {"MNIST": tvd.MNIST, "FashionMNIST": tvd.FashionMNIST}[name]
    raw = base / name / "raw"
    if name == "FashionMNIST":
        try:
            _unpack_debian_fashion(raw)
        except OSError:
            pass  # read-only root or broken package: fall through to the usual error
    missing = _missing(raw)
    offline = os.environ.get("FEDLAB_OFFLINE", "").lower() in ("1", "true", "yes")
    if missing and not offline:
        try:  # online: torchvision downloads and unpacks into <base>/<name>/raw
            cls(str(base), train=True, download=True)
            cls(str(base), train=False, download=True)
        except Exception:
            pass
        missing = _missing(raw)
    if missing:
        raise DatasetNotFoundError(
            f"{name} files not found: {', '.join(missing)} missing from {raw}. "
            + ("Downloading is switched off (FEDLAB_OFFLINE). " if offline else
               "The download failed (no network?). ")
            + f"Put the four files {', '.join(_RAW_FILES)} "
            f"(uncompressed) in {raw}, or set FEDLAB_DATA_DIR to a folder holding "
            f"{name}/raw/."
        )
    try:
        tr = cls(str(base), train=True, download=False)
        te = cls(str(base), train=False, download=False)
        x_tr, y_tr, x_te, y_te = tr.data, tr.targets, te.data, te.targets
        ok = (x_tr.shape == (60000, 28, 28) and y_tr.shape == (60000,)
              and x_te.shape == (10000, 28, 28) and y_te.shape == (10000,)
              and int(y_tr.max()) < 10 and int(y_te.max()) < 10)
    except Exception as e:  # torchvision fails deep inside its idx reader
        ok, err = False, e
    else:
        err = None
    if not ok:
        detail = f" ({type(err).__name__}: {err})" if err is not None else ""
        raise DatasetNotFoundError(
            f"{name} files in {raw} are truncated or corrupt{detail}. Replace the four "
            f"files {', '.join(_RAW_FILES)} with intact copies (60,000 training and "
            f"10,000 test images), or delete them to download again."
        )
    train, test = _normalised(x_tr, y_tr, x_te, y_te, list(tr.classes), name)
    tensor_cache.write(name, base, _RAW_FILES, train, test)
    return train, test


def _normalised(x_tr, y_tr, x_te, y_te, classes, name):
    xf = x_tr.to(torch.float32).div_(255.0)
    mean, std = float(xf.mean()), float(xf.std())
    train = _make(xf, y_tr, classes, name, "train", mean, std)
    test = _make(x_te.to(torch.float32).div_(255.0), y_te, classes, name, "test", mean, std)
    return train, test


def _make(x, y, classes, name, split, mean, std) -> FederatedDataset:
    images = x.sub_(mean).div_(std).unsqueeze(1).contiguous()
    return FederatedDataset(images=images, labels=y.to(torch.int64).contiguous(),
                            classes=classes, name=name, split=split, mean=mean, std=std)
