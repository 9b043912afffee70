"""Robust aggregators: an aggregate that a few lying clients cannot drag anywhere.

Each is a plain function of the round's :class:`~fedlab_widgets.engines.ClientUpdates`
(``delta [M, D]``) returning one update ``[D]``. Unlike FedAvg's mean they give
every sampled client one vote, whatever its number of samples (a client could lie
about that too), except ``norm_clip``, which only bounds each update and keeps the
weighted mean.

=================  ==================================================  ====================
name               rule                                                parameters
=================  ==================================================  ====================
``median``         coordinate-wise median (Yin et al. 2018)             --
``trimmed_mean``   per coordinate, drop the ``b = floor(trim_ratio*M)``  ``trim_ratio``
                   largest and smallest values, average the rest
                   (Yin et al. 2018)
``krum``           the update whose ``M - f - 2`` nearest neighbours    ``num_byzantine`` (f)
                   are closest (sum of squared distances; Blanchard
                   et al. 2017); needs ``M >= 2f + 3``
``multikrum``      the mean of the ``M - f`` updates with the best      ``num_byzantine`` (f)
                   Krum scores (scores computed once)
``norm_clip``      each update scaled to L2 norm at most ``max_norm``,   ``max_norm``
                   then the weighted mean (Sun et al. 2019)
=================  ==================================================  ====================

Ties (equal Krum scores) go to the earlier row.
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch

from ..engines.base import ClientUpdates
from ..params import Param

__all__ = ["median", "trimmed_mean", "krum", "multikrum", "norm_clip", "ROBUST_PARAMETERS",
           "CLIENT_CHECKS", "check_krum_clients", "check_trimmed_clients"]

ROBUST_PARAMETERS: dict[str, tuple[Param, ...]] = {
    "median": (),
    "trimmed_mean": (Param("trim_ratio", 0.1, lo=0.0, hi=0.5, hi_open=True, ui=(0.0, 0.45),
                           doc="share of the largest and of the smallest values dropped "
                               "per coordinate"),),
    "krum": (Param("num_byzantine", 1, kind="int", lo=0, ui=(0, 10),
                   doc="f, the number of lying clients per round Krum must survive"),),
    "multikrum": (Param("num_byzantine", 1, kind="int", lo=0, ui=(0, 10),
                        doc="f, the number of lying clients per round Krum must survive"),),
    "norm_clip": (Param("max_norm", 1.0, lo=0.0, lo_open=True, log=True, ui=(0.01, 10.0),
                        doc="largest L2 norm of an update the server accepts"),),
}


def median(updates: ClientUpdates) -> torch.Tensor:
    """Coordinate-wise median (the mean of the two middle values for an even count).

    Examples
    --------
    >>> import torch
    >>> from fedlab_widgets.engines import ClientUpdates
    >>> d = torch.tensor([[1.0, 5.0], [2.0, -100.0], [3.0, 6.0]])
    >>> median(ClientUpdates([0, 1, 2], d, torch.ones(3), torch.ones(3), torch.zeros(3)))
    tensor([2., 5.])
    """
    s = updates.delta.sort(dim=0).values
    m = s.shape[0]
    return s[m // 2].clone() if m % 2 else 0.5 * (s[m // 2 - 1] + s[m // 2])


def trimmed_count(trim_ratio: float, m: int) -> int:
    """How many of ``m`` values the trimmed mean drops at each end: ``floor(trim_ratio * m)``,
    the product taken exactly for the ratio as written (``0.29`` with 100 clients trims 29,
    not the 28 that float rounding of 28.999999999999996 would give).

    >>> trimmed_count(0.29, 100), trimmed_count(0.1, 25), trimmed_count(0.5, 7)
    (29, 2, 3)
    """
    return math.floor(Fraction(repr(float(trim_ratio))) * m)


def trimmed_mean(updates: ClientUpdates, *, trim_ratio: float = 0.1) -> torch.Tensor:
    """Coordinate-wise mean after dropping the :func:`trimmed_count` largest and smallest."""
    m = len(updates)
    b = trimmed_count(trim_ratio, m)
    if m - 2 * b < 1:
        raise ValueError(f"trim_ratio={trim_ratio:g} trims every update of {m}")
    s = updates.delta.sort(dim=0).values
    return s[b:m - b].mean(0)


def _krum_scores(delta: torch.Tensor, f: int) -> torch.Tensor:
    m = delta.shape[0]
    d = delta.double()
    sq = (d * d).sum(1)
    dist = (sq[:, None] + sq[None, :] - 2 * d @ d.T).clamp_min_(0)  # squared distances
    dist.fill_diagonal_(math.inf)
    k = m - f - 2
    return dist.sort(dim=1).values[:, :k].sum(1)


def check_krum_clients(name: str, params: dict, m: int) -> None:
    """A ValueError if Krum (``name``: krum or multikrum) cannot score ``m`` updates."""
    f = params["num_byzantine"]
    if m < 2 * f + 3:
        raise ValueError(f"{name} with num_byzantine={f} needs at least 2 * {f} + 3 = {2 * f + 3} "
                         f"clients per round; got {m} (sample more clients or lower "
                         f"num_byzantine to at most {max((m - 3) // 2, 0)})")


def check_trimmed_clients(name: str, params: dict, m: int) -> None:
    """A ValueError if the trimmed mean would drop all ``m`` updates."""
    if m - 2 * trimmed_count(params["trim_ratio"], m) < 1:
        raise ValueError(f"trimmed_mean with trim_ratio={params['trim_ratio']:g} would drop all "
                         f"{m} updates")


#: each robust aggregator's check that a round's number of updates is enough
CLIENT_CHECKS = {"krum": check_krum_clients, "multikrum": check_krum_clients,
                 "trimmed_mean": check_trimmed_clients}


def krum(updates: ClientUpdates, *, num_byzantine: int = 1) -> torch.Tensor:
    """The single update with the lowest Krum score (Blanchard et al. 2017)."""
    check_krum_clients("krum", {"num_byzantine": num_byzantine}, len(updates))
    i = int(torch.argmin(_krum_scores(updates.delta, num_byzantine)))
    return updates.delta[i].clone()


def multikrum(updates: ClientUpdates, *, num_byzantine: int = 1) -> torch.Tensor:
    """The mean of the ``M - f`` updates with the lowest Krum scores."""
    check_krum_clients("multikrum", {"num_byzantine": num_byzantine}, len(updates))
    scores = _krum_scores(updates.delta, num_byzantine)
    keep = torch.sort(scores, stable=True).indices[:len(updates) - num_byzantine]
    return updates.delta[keep].mean(0)


def norm_clip(updates: ClientUpdates, *, max_norm: float = 1.0) -> torch.Tensor:
    """The weighted mean of the updates, each first scaled to L2 norm at most ``max_norm``."""
    norms = updates.delta.double().norm(dim=1)
    scale = (max_norm / norms).clamp(max=1.0)
    p = updates.weight / updates.weight.sum()
    return (p * scale).to(updates.delta.dtype) @ updates.delta
