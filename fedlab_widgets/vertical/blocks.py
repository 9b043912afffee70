"""Vertical partitions: which pixels of every image each party holds.

In vertical FL the parties hold the *same* samples (customers, patients, images) and
*different features* of them. Here the features are MNIST's 784 pixels, split into blocks:
the left and right halves of every digit, its top and bottom, its quadrants. The samples are
aligned by id (sample ``i`` is the same digit at every party); real systems first find the
ids they share without revealing the others, by private set intersection, which the kit
assumes done.

Examples
--------
>>> blocks = feature_blocks("halves")
>>> blocks.num_parties, blocks.sizes
(2, [392, 392])
>>> x = torch.arange(2 * 784, dtype=torch.float32).view(2, 1, 28, 28)
>>> left, right = blocks.split(x)
>>> left.shape, float(left[0, 0]), float(right[0, 0])
(torch.Size([2, 392]), 0.0, 14.0)
>>> feature_blocks("quadrants").names
('top left', 'top right', 'bottom left', 'bottom right')
>>> bad = np.zeros((2, 28, 28), bool); bad[0, :, :14] = True
>>> feature_blocks(bad)
Traceback (most recent call last):
ValueError: blocks: party 1 holds no features; every party needs at least one pixel
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..registry import Registry

__all__ = ["FeatureBlocks", "feature_blocks", "LAYOUTS"]

SHAPE = (28, 28)


@dataclass(frozen=True)
class FeatureBlocks:
    """Who holds which feature: one boolean mask ``[28, 28]`` per party.

    Every pixel belongs to exactly one party (the blocks are disjoint and cover the image)
    and every party holds at least one pixel; :func:`feature_blocks` checks both.

    Attributes
    ----------
    masks : ndarray of bool, shape (parties, 28, 28)
    names : tuple of str
        One name per party ("left", "right", ...).
    """

    masks: np.ndarray
    names: tuple

    @property
    def num_parties(self) -> int:
        return len(self.masks)

    @property
    def sizes(self) -> list[int]:
        """The number of features (pixels) each party holds."""
        return [int(m.sum()) for m in self.masks]

    def indices(self, party: int) -> torch.Tensor:
        """The flat pixel indices (0..783, row-major) party ``party`` holds, in order."""
        return torch.from_numpy(np.flatnonzero(self.masks[party].ravel()))

    def split(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Each party's features of ``images`` (``[N, 1, 28, 28]`` or ``[N, 784]``): ``[N, n_p]`` each."""
        flat = images.reshape(len(images), -1)
        if flat.shape[1] != self.masks[0].size:
            raise ValueError(f"images must have {self.masks[0].size} pixels each; got {flat.shape[1]}")
        return [flat[:, self.indices(p)] for p in range(self.num_parties)]

    def mask_image(self, image: torch.Tensor, party: int, *, fill: float = float("nan")) -> np.ndarray:
        """``image`` (28 x 28) as party ``party`` sees it: the other parties' pixels set to ``fill``."""
        out = image.reshape(self.masks[0].shape).detach().cpu().double().numpy().copy()
        out[~self.masks[party]] = fill
        return out

    def describe(self) -> str:
        return ", ".join(f"{n}: {s} pixels" for n, s in zip(self.names, self.sizes))


#: the named layouts: each builds the masks of its parties
LAYOUTS = Registry("layout")


def _grid(rows: int, cols: int) -> np.ndarray:
    h, w = SHAPE
    masks = np.zeros((rows * cols, h, w), dtype=bool)
    for r in range(rows):
        for c in range(cols):
            masks[r * cols + c, r * h // rows:(r + 1) * h // rows, c * w // cols:(c + 1) * w // cols] = True
    return masks


@LAYOUTS.register("halves", doc="two parties: the left and the right half of every digit")
def halves():
    return _grid(1, 2), ("left", "right")


@LAYOUTS.register("rows", doc="two parties: the top and the bottom half")
def rows():
    return _grid(2, 1), ("top", "bottom")


@LAYOUTS.register("thirds", doc="three parties: three vertical stripes (9, 9 and 10 columns)")
def thirds():
    return _grid(1, 3), ("left", "middle", "right")


@LAYOUTS.register("quadrants", doc="four parties: the four quadrants")
def quadrants():
    return _grid(2, 2), ("top left", "top right", "bottom left", "bottom right")


def feature_blocks(layout="halves", *, names=None) -> FeatureBlocks:
    """The feature blocks of a named layout, or of masks given as an array.

    Parameters
    ----------
    layout : str or array of bool, shape (parties, 28, 28)
        A name from :data:`LAYOUTS` (``"halves"``, ``"rows"``, ``"thirds"``, ``"quadrants"``),
        or one mask per party.
    names : sequence of str, optional
        The parties' names (default: the layout's, or "party 0", "party 1", ...).

    Raises
    ------
    ValueError
        An unknown layout; fewer than 2 parties; a party with no pixel; a pixel no party
        holds or two parties hold (each message names the party or the pixel).
    """
    if isinstance(layout, str):
        masks, default_names = LAYOUTS.build(layout)
    else:
        masks = np.asarray(layout)
        if masks.dtype != bool or masks.ndim != 3 or masks.shape[1:] != SHAPE:
            raise ValueError(f"blocks must be a boolean array of shape (parties, 28, 28); "
                             f"got {masks.dtype} of shape {masks.shape}")
        default_names = tuple(f"party {p}" for p in range(len(masks)))
    names = tuple(default_names if names is None else names)
    check_masks(masks, names)
    return FeatureBlocks(masks.copy(), names)


def check_masks(masks: np.ndarray, names) -> None:
    """Refuse blocks that are not a partition of the image among at least two parties."""
    if len(masks) < 2:
        raise ValueError(f"blocks: a vertical federation needs at least 2 parties; got {len(masks)}")
    if len(names) != len(masks):
        raise ValueError(f"names: one name per party ({len(masks)}); got {len(names)}")
    for p, m in enumerate(masks):
        if not m.any():
            raise ValueError(f"blocks: party {p} holds no features; every party needs at least one pixel")
    count = masks.sum(0)
    if (count == 0).any():
        r, c = np.argwhere(count == 0)[0]
        raise ValueError(f"blocks do not cover the image: {int((count == 0).sum())} pixels belong to "
                         f"no party (the first at row {r}, column {c})")
    if (count > 1).any():
        r, c = np.argwhere(count > 1)[0]
        who = ", ".join(str(p) for p in np.flatnonzero(masks[:, r, c]))
        raise ValueError(f"blocks overlap: {int((count > 1).sum())} pixels belong to more than one party "
                         f"(row {r}, column {c} to parties {who})")
