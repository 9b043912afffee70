"""A client's handwriting: its mean image per digit and some of its digits.

TensorFlow Federated's image-classification tutorial shows each client's mean image per
digit to make a natural federation visible; :func:`plot_client_digits` does that for any
partition (writers, rotated or noisy clients, shards). It takes ``fig=`` and returns the
figure.

Examples
--------
>>> from fedlab_widgets import load_mnist, partition
>>> from fedlab_widgets.gallery import plot_client_digits
>>> train, _ = load_mnist()
>>> fig = plot_client_digits(train, partition(train, "writer"), 0)
>>> len(fig.axes)
20
"""

from __future__ import annotations

import numpy as np
import torch

from .writers import SERIES

__all__ = ["plot_client_digits", "client_title", "client_mean_images"]


def client_mean_images(data, ix: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(means [C, 28, 28], counts [C])``: a client's mean image of each class."""
    x = data.images[ix].reshape(len(ix), -1).to(torch.float32)
    y = data.labels[ix]
    counts = torch.bincount(y, minlength=num_classes)
    sums = torch.zeros(num_classes, x.shape[1]).index_add_(0, y, x)
    means = sums / counts.clamp(min=1)[:, None]
    return means.reshape(num_classes, *data.images.shape[2:]), counts


def client_title(data, partition, client: int) -> str:
    """``client 3: writer 2154 (high-school students), 118 digits`` and its skew, if any."""
    ix = partition.client_indices[client]
    text = f"client {client}: {len(ix)} digits"
    who = partition.client_writers
    if who is not None:
        w = who[client]
        if len(w) == 1:
            series = int(data.series[ix[0]]) if len(ix) else None
            text = (f"client {client}: writer {int(w[0])}"
                    + (f" ({SERIES.get(series, f'series {series}')})" if series is not None else "")
                    + f", {len(ix)} digits")
        else:
            text = f"client {client}: {len(w)} writers, {len(ix)} digits"
    skew = getattr(data, "feature_skew", None) or {}
    if "client_angle" in skew and skew["client_angle"][client]:
        text += f", turned {skew['client_angle'][client]} degrees"
    if "client_noise" in skew and skew["client_noise"][client] > 0:
        text += f", noise std {skew['client_noise'][client]:.2f}"
    return text


def plot_client_digits(data, partition, client: int, *, fig=None, examples: int | None = None):
    """Top row: the client's mean image of each digit; bottom row: some of its digits.

    Parameters
    ----------
    data : FederatedDataset
        The (possibly feature-skewed) training set ``partition`` splits.
    partition : Partition
    client : int
        From 0 to ``num_clients - 1``.
    fig : matplotlib Figure, optional
    examples : int, optional
        How many of its digits to show (default: as many as there are classes); the
        first of each class it holds, then the next ones.
    """
    import matplotlib.pyplot as plt

    k = partition.num_clients
    if isinstance(client, bool) or not isinstance(client, (int, np.integer)) or not 0 <= client < k:
        raise ValueError(f"client must be an integer from 0 to {k - 1}; got {client!r}")
    c = partition.num_classes
    examples = c if examples is None else int(examples)
    ix = partition.client_indices[int(client)]
    means, counts = client_mean_images(data, ix, c)
    if fig is None:
        fig = plt.figure(figsize=(max(c, examples) * 0.75, 2.0))
    cols = max(c, examples)
    lo, hi = float(data.images.min()), float(data.images.max())
    for d in range(c):
        ax = fig.add_subplot(2, cols, d + 1)
        if counts[d]:
            ax.imshow(means[d].numpy(), cmap="gray_r", vmin=lo, vmax=hi)
        ax.set_title(f"{d} (x{int(counts[d])})", fontsize=7)
        ax.axis("off")
    y = data.labels[ix]
    first = [int(torch.nonzero(y == d)[0]) for d in range(c) if counts[d]]   # one per class,
    taken = set(first)
    rest = [i for i in range(len(ix)) if i not in taken]                     # then the others
    chosen = (first + rest)[:examples]
    for j in range(examples):
        ax = fig.add_subplot(2, cols, cols + j + 1)
        ax.axis("off")
        if j < len(chosen):
            ax.imshow(data.images[ix[chosen[j]], 0].numpy(), cmap="gray_r", vmin=lo, vmax=hi)
    fig.suptitle(client_title(data, partition, int(client)) + "  (top: mean image per digit)",
                 fontsize=9)
    return fig
