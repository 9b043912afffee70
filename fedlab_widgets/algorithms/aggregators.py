"""Aggregators: from per-client updates ``[M, D]`` to one update ``[D]``.

Each is a plain function of :class:`~fedlab_widgets.engines.ClientUpdates`; write
your own the same way and pass it as ``aggregator=``.
"""

from __future__ import annotations

import torch

from ..engines.base import ClientUpdates
from ..registry import Registry

__all__ = ["weighted_mean", "fednova", "AGGREGATORS", "AGGREGATOR_PARAMETERS"]


def weighted_mean(updates: ClientUpdates) -> torch.Tensor:
    """FedAvg's aggregate: the mean of the client updates weighted by sample count.

    ``sum_k (n_k / n) * delta_k`` with ``n = sum_k n_k`` over the sampled clients.

    Examples
    --------
    >>> import torch
    >>> from fedlab_widgets.engines import ClientUpdates
    >>> u = ClientUpdates([0, 1], torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
    ...                   torch.tensor([3.0, 1.0], dtype=torch.float64),
    ...                   torch.tensor([3, 1]), torch.zeros(2, dtype=torch.float64))
    >>> weighted_mean(u)
    tensor([0.7500, 0.2500])
    """
    p = updates.weight / updates.weight.sum()
    return p.to(updates.delta.dtype) @ updates.delta


def fednova(updates: ClientUpdates) -> torch.Tensor:
    """FedNova's normalised average (Wang et al. 2020, with plain local SGD).

    Each client's update is divided by its number of local steps ``tau_k`` (its
    average step), the normalised updates are averaged with weights ``p_k = n_k / n``,
    and the result is scaled by the effective number of steps
    ``tau_eff = sum_k p_k tau_k``::

        delta = tau_eff * sum_k p_k * delta_k / tau_k

    A client that ran more steps no longer pulls the average towards its own
    optimum in proportion to its extra work. With equal ``tau_k`` this is
    :func:`weighted_mean` exactly.
    """
    p = updates.weight / updates.weight.sum()
    tau = updates.steps.to(torch.float64)
    coef = (p * (p * tau).sum() / tau).to(updates.delta.dtype)
    return coef @ updates.delta


from . import robust  # noqa: E402

#: name -> function(updates, **params) (a :class:`~fedlab_widgets.registry.Registry`), with
#: what each declares: ``sum`` (a weighted sum of the updates: what secure aggregation and
#: DP's accounting need), ``needs_each_update`` (it reads every client's update: robust
#: aggregators, which secure aggregation's masks hide from the server). The robust ones
#: are in :mod:`.robust`.
AGGREGATORS = Registry("aggregator")
AGGREGATORS.add("mean", weighted_mean, doc="FedAvg's sample-weighted mean", sum=True)
AGGREGATORS.add("fednova", fednova, doc="FedNova: updates normalised by their local steps",
                why_not_sum="FedNova normalises each update by its own step count")
for _name, _fn in (("median", robust.median), ("trimmed_mean", robust.trimmed_mean),
                   ("krum", robust.krum), ("multikrum", robust.multikrum),
                   ("norm_clip", robust.norm_clip)):
    AGGREGATORS.add(_name, _fn, robust.ROBUST_PARAMETERS[_name], needs_each_update=True,
                    check_clients=robust.CLIENT_CHECKS.get(_name))
#: each aggregator's parameters (name, default, range, scale)
AGGREGATOR_PARAMETERS = AGGREGATORS.table()
