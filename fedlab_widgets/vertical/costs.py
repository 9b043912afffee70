"""What an epoch costs on the wire: split learning against FedAvg, as formulas.

An *epoch* is every training sample seen once. Split learning pays per **sample** (the
activations and gradients at the cut, and in the vanilla variant the label) plus the client
layers handed to and from every client once per epoch; FedAvg pays per **client** (the whole
model down and the update up). So split learning wins when clients are many and hold little
data each, or the model is large; FedAvg when clients hold much data (Singh et al. 2019,
"Detailed comparison of communication efficiency of split learning and federated learning").

Examples
--------
>>> split_bytes_per_epoch(60_000, clients=100, cut_width=200, client_params=157_000)
222080000
>>> fedavg_bytes_per_epoch(clients=100, params=199_210)
159368000
>>> fedavg_bytes_per_epoch(clients=100, params=199_210, local_epochs=5)
31873600
"""

from __future__ import annotations

__all__ = ["split_bytes_per_epoch", "fedavg_bytes_per_epoch"]


def split_bytes_per_epoch(num_samples: int, *, clients: int, cut_width: int, client_params: int,
                          variant: str = "vanilla", middle_width: int | None = None,
                          float_bytes: int = 4, label_bytes: int = 8) -> int:
    """Bytes of one epoch of split learning (sequential or SplitFed: the same).

    Parameters
    ----------
    num_samples : int
        Training samples, all clients together.
    clients : int
    cut_width : int
        Activations per sample at the cut (200 after the 2NN's first layer).
    client_params : int
        Parameters the client holds (its layers, and the head if U-shaped); each client
        receives them and sends them back once per epoch.
    variant : {"vanilla", "u-shaped"}
    middle_width : int, optional
        U-shaped: the width of what the server sends back (default ``cut_width``).
    float_bytes, label_bytes : int
        Bytes of a float (4, float32) and of a label (8, int64).
    """
    if variant == "vanilla":
        per_sample = 2 * cut_width * float_bytes + label_bytes
    elif variant == "u-shaped":
        mid = cut_width if middle_width is None else middle_width
        per_sample = 2 * (cut_width + mid) * float_bytes
    else:
        raise ValueError(f"variant must be one of vanilla, u-shaped; got {variant!r}")
    return num_samples * per_sample + 2 * clients * client_params * float_bytes


def fedavg_bytes_per_epoch(*, clients: int, params: int, local_epochs: int = 1,
                           float_bytes: int = 4) -> int:
    """Bytes of FedAvg per epoch of data: ``2 * clients * params * float_bytes / local_epochs``.

    A round with client fraction C moves ``2 * C * clients * params`` floats and sees a
    fraction ``C * local_epochs`` of the data, whatever C.
    """
    return 2 * clients * params * float_bytes // local_epochs
