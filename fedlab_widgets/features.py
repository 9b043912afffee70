"""Feature skew: clients whose images look different (rotations, noise), and how to measure it.

Label skew changes *what* a client holds; feature skew changes *how it looks*. Two
standard ways of making it, applied once when the federation is built, seeded:

``rotation="four"``
    The rotated-MNIST benchmark of clustered FL (Ghosh et al. 2020, IFCA): the clients
    are dealt at random into four equal groups, and group ``g``'s images are turned by
    ``90 * g`` degrees (exact pixel rotations). ``"none"`` leaves them upright.
``noise``
    NIID-Bench's noise-based feature imbalance (Li, Diao, Chen & He, ICDE 2022): client
    ``k`` of ``K`` gets Gaussian noise of standard deviation ``noise * (k + 1) / K``
    (in pixel intensity, where black is 0 and white 1) added to its images, so the
    clients range from almost clean to the full strength.

:func:`skew_features` returns a new dataset (the original is untouched); both engines
read its images like any other.

Examples
--------
>>> from fedlab_widgets import load_mnist, partition
>>> from fedlab_widgets.features import skew_features
>>> train, _ = load_mnist()
>>> parts = partition(train, "iid", 8, seed=0)
>>> rotated = skew_features(train, parts, rotation="four", seed=0)
>>> sorted(set(rotated.feature_skew["client_angle"]))
[0, 90, 180, 270]
>>> parts.with_images(rotated.images).heterogeneity()["feature_skew"] > 0.3
True
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from .params import Param, check_params
from .seeds import generator

__all__ = ["FEATURE_PARAMETERS", "ROTATIONS", "skew_features", "rotated", "feature_skew"]

#: the rotation presets: the angles (degrees) the client groups are turned by
ROTATIONS = {"none": (0,), "four": (0, 90, 180, 270)}
#: the feature-skew settings (name, default, range), for the explorer, dashboard and CLI
FEATURE_PARAMETERS = (
    Param("rotation", "none", kind="choice", choices=tuple(ROTATIONS),
          doc="feature skew: 'four' turns four random groups of clients by 0, 90, 180, 270 degrees"),
    Param("noise", 0.0, lo=0.0, hi=2.0, ui=(0.0, 1.0),
          doc="feature skew: client k of K gets Gaussian noise of std noise * (k+1)/K "
              "(pixel intensity 0..1)"),
)


def feature_skew(p, images: torch.Tensor, *, spread: bool = False):
    """How far each client's handwriting (its mean image per class) is from the population's,
    for a :class:`~fedlab_widgets.partition.Partition` ``p`` of ``images``.

    For every client ``k`` and class ``c`` it holds, the squared distance between the
    client's mean image of class ``c`` and the whole partition's, minus what sampling
    alone gives a random sample of that size (``var_c / n_kc`` times the finite-population
    factor ``(N_c - n_kc) / (N_c - 1)``), averaged over pixels and over the samples; the
    square root of that. Label skew alone does not move it (it compares like with like),
    an IID partition gives about 0 whatever the client sizes, a writer or a rotated
    federation more. Units: standard deviations of a normalised pixel.

    Zero-mean noise leaves mean images where they are; with ``spread=True`` the result is
    a pair ``(style, spread)``, where ``spread`` is the mean over the (client, class)
    cells of ``|log(cell variance / class variance)|`` of the pixels: 0 when clients'
    images vary as much as everyone's, larger when some are noisier (or cleaner).

    Examples
    --------
    >>> import torch
    >>> from fedlab_widgets import partition
    >>> x = torch.randn(2000, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    >>> y = torch.arange(2000) % 10
    >>> iid = partition(y, "iid", 20, seed=0)
    >>> round(feature_skew(iid, x), 1)
    0.0
    >>> x[iid.client_indices[0]] += 3.0             # one client's images shifted
    >>> feature_skew(iid, x) > 0.5
    True
    """
    x = images.reshape(len(images), -1).to(torch.float32)
    owner = torch.full((len(x),), -1, dtype=torch.int64)
    for k, ix in enumerate(p.client_indices):
        owner[ix] = k
    keep = owner >= 0
    x, y, owner = x[keep], p.labels[keep], owner[keep]
    cell = owner * p.num_classes + y                           # (client, class) cells
    cells, d = p.num_clients * p.num_classes, x.shape[1]
    sums = torch.zeros(cells, d).index_add_(0, cell, x).double()       # float32 sums, then
    n = torch.bincount(cell, minlength=cells).double()                 # float64 arithmetic
    big_n = torch.bincount(y, minlength=p.num_classes).double()
    mu = torch.zeros(p.num_classes, d).index_add_(0, y, x).double() / big_n.clamp(min=1)[:, None]
    sq = torch.zeros(p.num_classes, d).index_add_(0, y, x * x).double()
    var = (sq - big_n[:, None] * mu ** 2).clamp(min=0) / (big_n - 1).clamp(min=1)[:, None]
    cls = torch.arange(cells) % p.num_classes
    held = n > 0
    d2 = ((sums[held] / n[held, None] - mu[cls[held]]) ** 2).mean(1)
    nc, bn = n[held], big_n[cls[held]]
    noise = var[cls[held]].mean(1) / nc * ((bn - nc) / (bn - 1).clamp(min=1))
    style = float(((d2 - noise) * nc).sum().div(nc.sum()).clamp(min=0).sqrt())
    if not spread:
        return style
    csq = torch.zeros(cells, d).index_add_(0, cell, x * x).double()[held]
    v_cell = (csq / nc[:, None] - (sums[held] / nc[:, None]) ** 2).mean(1)   # within a cell
    v_pop = (sq / big_n.clamp(min=1)[:, None] - mu ** 2).mean(1)[cls[held]]
    many = nc >= 2
    ratio = (v_cell[many] / v_pop[many].clamp(min=1e-12)).clamp(min=1e-12).log().abs()
    return style, float((ratio * nc[many]).sum() / nc[many].sum())


def rotated(data, angle: int):
    """The whole dataset turned by ``angle`` degrees (a multiple of 90), e.g. a test set
    for the clients of one rotation group."""
    if isinstance(angle, bool) or not isinstance(angle, (int, np.integer)) or angle % 90:
        raise ValueError(f"angle must be a multiple of 90 degrees; got {angle!r}")
    images = torch.rot90(data.images, -(int(angle) // 90) % 4, dims=(2, 3)).contiguous()
    return replace(data, images=images, columns=data.columns,
                   feature_skew={"rotation": int(angle) % 360})


def skew_features(data, partition, *, rotation: str = "none", noise: float = 0.0,
                  seed: int = 0):
    """``data`` with each client's images rotated and/or noised (see the module docstring).

    Parameters
    ----------
    data : FederatedDataset
        The training set that ``partition`` splits.
    partition : Partition
    rotation : {"none", "four"}
    noise : float, from 0 to 2
        The largest client's noise standard deviation, in pixel intensity (0..1).
    seed : int
        Which clients get which angle, and the noise itself.

    Returns
    -------
    FederatedDataset
        A copy whose ``feature_skew`` records the settings and each client's angle and
        noise (``client_angle``, ``client_noise``); the labels (and writers) are shared.
    """
    s = check_params("feature skew", FEATURE_PARAMETERS, {"rotation": rotation, "noise": noise})
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0; got {seed!r}")
    if len(partition.labels) != len(data.labels) or not torch.equal(partition.labels, data.labels):
        raise ValueError("partition must be made from the labels of the data it skews")
    k = partition.num_clients
    angles = ROTATIONS[s["rotation"]]
    group = np.zeros(k, dtype=np.int64)
    if len(angles) > 1:
        order = torch.randperm(k, generator=generator(seed, 31)).numpy()
        group[order] = np.arange(k) % len(angles)      # equal groups, dealt at random
    client_angle = [int(angles[g]) for g in group]
    client_noise = [float(s["noise"]) * (c + 1) / k for c in range(k)]
    images = data.images.clone()
    for c, ix in enumerate(partition.client_indices):
        if len(ix) == 0:
            continue
        x = images[ix]
        if client_angle[c]:
            x = torch.rot90(x, -client_angle[c] // 90, dims=(2, 3))
        if client_noise[c] > 0:
            e = torch.randn(x.shape, generator=generator(seed, 37, c), dtype=torch.float32)
            x = x + e.to(x.dtype) * (client_noise[c] / data.std)   # pixel units -> normalised
        images[ix] = x
    return replace(data, images=images, columns=data.columns, feature_skew={
        **s, "seed": int(seed), "partition": partition.fingerprint(),
        "client_angle": client_angle, "client_noise": client_noise})
