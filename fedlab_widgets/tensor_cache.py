"""A parsed copy of a dataset's raw files, kept as tensors that load in a fraction of a second.

The images are stored normalised (float32) and loaded **memory-mapped**: processes that
load the same data (a Flower deployment's ClientApps, a classroom's seats on one machine,
two kernels) share one copy in memory instead of each holding its own 220 MB. A copy made
from other raw files (another size or modification time) or by another version of the
kit (the format is in the file's name) is never read.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

__all__ = ["FORMAT", "paths", "read", "write"]

FORMAT = 2   # normalised float32 images, loaded memory-mapped


def paths(name: str, base: Path) -> list[Path]:
    """Where a parsed copy may live: the user's cache folder, else beside the raw files.

    The user's folder comes first so that a shared, read-only data folder (a workshop's
    network drive) is never written to. The file name depends on the data folder.
    """
    user = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fedlab-widgets"
    tag = hashlib.sha256(str(base.resolve()).encode()).hexdigest()[:12]
    return [user / f"{name}-{tag}-f{FORMAT}.pt", base / name / f"fedlab-cache-f{FORMAT}.pt"]


def _stamp(raw: Path, raw_files) -> list:
    """Size and modification time of each raw file: a copy made from other files is stale."""
    return [[f, (raw / f).stat().st_size, (raw / f).stat().st_mtime_ns] for f in raw_files]


def read(name: str, base: Path, raw_files) -> dict | None:
    """The copy's tensors (``x_tr``, ``y_tr``, ``x_te``, ``y_te``, ``classes``, ``mean``,
    ``std``) if a valid one exists, else None."""
    raw = base / name / "raw"
    if not all((raw / f).is_file() for f in raw_files):
        return None
    stamp = _stamp(raw, raw_files)
    for path in paths(name, base):
        try:
            c = torch.load(path, weights_only=True, mmap=True)
            if c.get("stamp") == stamp and c.get("format") == FORMAT:
                return c
        except Exception:  # missing, unreadable or from another version: parse the raw files
            continue
    return None


def write(name: str, base: Path, raw_files, train, test) -> None:
    """Save ``train`` and ``test`` (normalised datasets) where :func:`read` finds them."""
    c = {"format": FORMAT, "stamp": _stamp(base / name / "raw", raw_files),
         "x_tr": train.images, "y_tr": train.labels, "x_te": test.images, "y_te": test.labels,
         "classes": list(train.classes), "mean": train.mean, "std": train.std}
    for path in paths(name, base):  # the first writable place wins; none is fine too
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.part")
            torch.save(c, tmp)
            tmp.replace(path)
            return
        except OSError:
            continue
