"""Figures of the vertical lessons: what each party sees, what it sends, what leaks, what it costs.

Every function takes ``ax=`` (or ``axes=``) and returns it, as :mod:`fedlab_widgets.plots` does.

Examples
--------
>>> import matplotlib; matplotlib.use("Agg")
>>> from fedlab_widgets.vertical import feature_blocks
>>> axes = plot_party_views(feature_blocks("quadrants"), torch.zeros(28, 28))
>>> len(axes)
4
"""

from __future__ import annotations

import numpy as np
import torch

from .costs import fedavg_bytes_per_epoch, split_bytes_per_epoch

__all__ = ["plot_party_views", "plot_embeddings", "plot_roc", "plot_bytes_per_epoch"]


def _plt():
    import matplotlib.pyplot as plt
    return plt


def plot_party_views(blocks, image: torch.Tensor, *, axes=None):
    """One panel per party: ``image`` with the pixels the party does not hold greyed out."""
    plt = _plt()
    if axes is None:
        _, axes = plt.subplots(1, blocks.num_parties, figsize=(1.8 * blocks.num_parties, 2.0))
    axes = np.atleast_1d(axes)
    cmap = plt.get_cmap("gray").with_extremes(bad="#d9d9d9")
    for p, ax in enumerate(axes):
        ax.imshow(np.ma.masked_invalid(blocks.mask_image(image, p)), cmap=cmap)
        ax.set_title(f"{blocks.names[p]}\n{blocks.sizes[p]} pixels", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    return axes


def plot_embeddings(fed, dataset, *, party: int = 0, num_samples: int = 2000, ax=None):
    """What party ``party`` sends up, projected on its first two principal components, by digit."""
    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 3.6))
    n = min(num_samples, len(dataset))
    sub = dataset.subset(torch.arange(n))
    h = fed.embeddings(sub, party).double()
    h = h - h.mean(0)
    _, _, v = torch.linalg.svd(h, full_matrices=False)
    xy = (h @ v[:2].T).numpy()
    labels = sub.labels.numpy()
    for d in range(dataset.num_classes):
        m = labels == d
        ax.scatter(xy[m, 0], xy[m, 1], s=4, alpha=0.6, label=str(d))
    ax.set_xlabel("first principal component")
    ax.set_ylabel("second")
    ax.set_title(f"what the {fed.parties[party]} party sends up (epoch {fed.epoch})", fontsize=10)
    ax.legend(markerscale=3, fontsize=7, ncol=2, loc="best", title="digit", title_fontsize=7)
    return ax


def plot_roc(results: dict, *, ax=None):
    """ROC curves of attacks (``{name: LeakResult}``), the diagonal being a guess."""
    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 3.6))
    for name, r in results.items():
        ax.step(r.fpr, r.tpr, where="post", label=f"{name} (AUC {r.auc:.2f})")
    ax.plot([0, 1], [0, 1], ":", color="grey", label="a guess (AUC 0.50)")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=8, loc="lower right")
    return ax


def plot_bytes_per_epoch(num_samples: int, clients, *, params: int = 199_210,
                         client_params: int = 157_000, cut_width: int = 200, measured=None, ax=None):
    """Megabytes per epoch against the number of clients: split learning's formula and FedAvg's.

    ``measured``: optional ``{label: (clients, bytes)}`` points to draw on the curves.
    """
    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(4.8, 3.4))
    k = np.asarray(list(clients))
    split = [split_bytes_per_epoch(num_samples, clients=int(c), cut_width=cut_width,
                                   client_params=client_params) / 1e6 for c in k]
    fedavg = [fedavg_bytes_per_epoch(clients=int(c), params=params) / 1e6 for c in k]
    ax.plot(k, split, label="split learning (cut after layer 1)")
    ax.plot(k, fedavg, label="FedAvg (E = 1)")
    for label, (c, b) in (measured or {}).items():
        ax.plot([c], [b / 1e6], "o", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"clients sharing {num_samples:,} samples")
    ax.set_ylabel("MB per epoch")
    ax.legend(fontsize=8)
    return ax
