"""Who wrote each MNIST digit: QMNIST's extended labels (Yadav & Bottou 2019).

MNIST is a federation of people. QMNIST's two *extended label* files give, for every
MNIST digit in MNIST's own order, the NIST writer who drew it and the writer's series
(0 = Census Bureau employees, 4 = high-school students). :func:`~fedlab_widgets.load_mnist`
attaches them to both datasets as ``writers`` and ``series``; the ``"writer"`` partition
scheme makes one client per writer (or groups of whole writers).

Where the files are looked for: ``<root>/QMNIST/raw/`` below the data folder
(:func:`~fedlab_widgets.datasets.data_root`: the ``root`` argument, then
``$FEDLAB_DATA_DIR``, ...). Missing and online, they are downloaded on first use with
torchvision's own helper and checked against torchvision's MD5s; offline, MNIST still
loads and asking for writers raises :class:`WritersNotFoundError` saying where to put them.

Examples
--------
>>> from fedlab_widgets import load_mnist
>>> train, test = load_mnist()
>>> len(train.writers.unique()), len(test.writers.unique())
(539, 297)
>>> SERIES[int(train.series[0])]
'high-school students'
"""

from __future__ import annotations

import gzip
import os
import warnings
from pathlib import Path

import numpy as np
import torch

__all__ = ["QMNIST_FILES", "SERIES", "WritersNotFoundError", "writer_folder", "read_writers",
           "download_writers", "attach"]

#: the two extended-label files: split -> (file name, torchvision's URL, torchvision's MD5)
QMNIST_FILES = {
    "train": ("qmnist-train-labels-idx2-int.gz",
              "https://raw.githubusercontent.com/facebookresearch/qmnist/master/"
              "qmnist-train-labels-idx2-int.gz", "0058f8dd561b90ffdd0f734c6a30e5e4"),
    "test": ("qmnist-test-labels-idx2-int.gz",
             "https://raw.githubusercontent.com/facebookresearch/qmnist/master/"
             "qmnist-test-labels-idx2-int.gz", "5b5b05890a5e13444e108efe57b788aa"),
}
#: NIST's series of writers (column 1 of the files)
SERIES = {0: "Census employees", 4: "high-school students"}


class WritersNotFoundError(FileNotFoundError, ValueError):
    """The writer ids were asked for but the QMNIST label files are missing or wrong (or
    the dataset has no writers). Also a ValueError, so front ends show it as bad input."""


def writer_folder(base: Path) -> Path:
    """The folder the two label files belong in, below the data folder ``base``."""
    return Path(base) / "QMNIST" / "raw"


def _how_to(folder: Path) -> str:
    names = " and ".join(f for f, _, _ in QMNIST_FILES.values())
    return (f"Put the two QMNIST extended-label files {names} (from "
            f"https://github.com/facebookresearch/qmnist, as torchvision.datasets.QMNIST "
            f"downloads them) in {folder}, or set FEDLAB_DATA_DIR to a folder holding QMNIST/raw/.")


def missing_message(folder: Path, why: str = "") -> str:
    """The one message for writers asked of MNIST without the label files."""
    return (f"MNIST's writer ids need QMNIST's extended labels, which were not found in "
            f"{folder}{why}. " + _how_to(folder))


def _offline() -> bool:
    return os.environ.get("FEDLAB_OFFLINE", "").lower() in ("1", "true", "yes")


def download_writers(base: Path) -> None:
    """Download the missing label files with torchvision's helper (MD5-checked); a
    :class:`WritersNotFoundError` saying what to do when that fails or is switched off."""
    folder = writer_folder(base)
    missing = [s for s, (f, _, _) in QMNIST_FILES.items() if not (folder / f).is_file()]
    if not missing:
        return
    if _offline():
        raise WritersNotFoundError(missing_message(folder, " (downloading is switched off: "
                                                           "FEDLAB_OFFLINE)"))
    from torchvision.datasets.utils import download_url   # lazily: slow to import

    try:
        for s in missing:
            f, url, md5 = QMNIST_FILES[s]
            download_url(url, str(folder), filename=f, md5=md5)
    except Exception as e:   # no network, read-only folder, wrong checksum
        raise WritersNotFoundError(missing_message(
            folder, f" and could not be downloaded ({type(e).__name__}: {e})")) from None
    still = [QMNIST_FILES[s][0] for s in missing if not (folder / QMNIST_FILES[s][0]).is_file()]
    if still:
        raise WritersNotFoundError(missing_message(folder, " and the download did not arrive"))


def _read_idx2(path: Path) -> np.ndarray:
    """An ``idx2-int`` file (big-endian int32 matrix, gzip-compressed) as ``[rows, cols]``."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
        magic, rows, cols = np.frombuffer(raw[:12], dtype=">i4")
        if magic != 0x0C02 or len(raw) != 12 + 4 * int(rows) * int(cols):
            raise ValueError(f"not an idx2-int file of {rows} x {cols} (magic {magic:#x}, "
                             f"{len(raw)} bytes)")
        return np.frombuffer(raw, dtype=">i4", offset=12).reshape(int(rows), int(cols))
    except (OSError, EOFError, ValueError, gzip.BadGzipFile) as e:
        raise WritersNotFoundError(
            f"{path} is truncated or corrupt ({type(e).__name__}: {e}). Replace it with an "
            f"intact copy (torchvision's MD5 {dict((v[0], v[2]) for v in QMNIST_FILES.values())[path.name]}), "
            f"or delete it to download again. " + _how_to(path.parent)) from None


def read_writers(base: Path, train_labels: torch.Tensor, test_labels: torch.Tensor) -> dict:
    """``{"train": (writers, series), "test": (writers, series)}`` from the label files.

    Each file's rows must be MNIST's digits in MNIST's order: its column 0 must equal
    MNIST's labels (the training file has 60,000 rows; the test file's first 10,000 rows
    are MNIST's test set). A file that does not is refused, naming it.
    """
    folder = writer_folder(base)
    out = {}
    for split, labels in (("train", train_labels), ("test", test_labels)):
        path = folder / QMNIST_FILES[split][0]
        if not path.is_file():
            raise WritersNotFoundError(missing_message(folder))
        table = _read_idx2(path)
        n = len(labels)
        if table.shape[0] < n or table.shape[1] < 3 or not np.array_equal(
                table[:n, 0], labels.numpy()):
            bad = "too few rows" if table.shape[0] < n or table.shape[1] < 3 else \
                f"{int((table[:n, 0] != labels.numpy()).sum())} of its first {n} digits differ"
            raise WritersNotFoundError(
                f"{path} does not match MNIST's {split} labels ({bad}): its rows must be "
                f"MNIST's {split} digits in MNIST's order. Replace it with torchvision's file "
                f"(MD5 {QMNIST_FILES[split][2]}), or delete it to download again.")
        out[split] = (torch.from_numpy(table[:n, 2].astype(np.int64)),
                      torch.from_numpy(table[:n, 1].astype(np.int64)))
    return out


def attach(train, test, base: Path) -> None:
    """Give MNIST's two datasets their writers and series from the label files: now if the
    files are here, else on first use (a download when online). A wrong file is refused,
    naming it; MNIST itself still loads. Other datasets get the message why they have none."""
    if train.name != "MNIST":
        for d in (train, test):
            d.missing_writers = (f"{d.name} has no writers: its images are product photos, not "
                                 f"handwriting. Writer partitions need MNIST (load_mnist()); use "
                                 f"another scheme for {d.name}.")
        return

    def fill():
        cols = read_writers(base, train.labels, test.labels)
        for d in (train, test):
            d.columns["writers"], d.columns["series"] = cols[d.split]
            d.missing_writers = None

    def fetch():
        download_writers(base)
        fill()

    folder = writer_folder(base)
    for d in (train, test):
        d.missing_writers = missing_message(folder)
    if all((folder / f).is_file() for f, _, _ in QMNIST_FILES.values()):
        try:
            fill()
        except WritersNotFoundError as e:
            for d in (train, test):
                d.missing_writers = str(e)
            warnings.warn(str(e), stacklevel=4)
    else:
        for d in (train, test):
            d.fetch_writers = fetch
