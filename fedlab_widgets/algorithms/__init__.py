"""Federated algorithms, each a small composition of steps on the per-client updates.

=============  ===============================================================  =====================================
name           what changes from FedAvg                                          parameters
=============  ===============================================================  =====================================
``fedavg``     nothing: weighted mean of the updates, ``x + delta``              --
``fedprox``    every local gradient gets ``mu * (w - x)`` (Li et al. 2020)       ``mu``
``scaffold``   every local gradient gets ``c - c_k``; control variates           ``server_lr``
               updated after training (Karimireddy et al. 2020, option II)
``fednova``    updates normalised by local steps before averaging (Wang 2020)    --
``fedavgm``    server momentum (Hsu et al. 2019)                                 ``server_lr``, ``momentum``
``fedadam``    server Adam on the averaged update (Reddi et al. 2021)            ``server_lr``, ``beta1``, ``beta2``, ``tau``
``fedyogi``    server Yogi (Reddi et al. 2021)                                   ``server_lr``, ``beta1``, ``beta2``, ``tau``
``fedadagrad`` server Adagrad (Reddi et al. 2021)                                ``server_lr``, ``beta1``, ``tau``
``dp-fedavg``  clip each update, sum, add Gaussian noise, divide by m            ``clip_norm``, ``noise_multiplier``,
               (McMahan et al. 2018); epsilon from dp-accounting                 ``delta``
``fedper``     each client keeps its own last layer (personal head); only the    --
               other layers are federated (Arivazhagan et al. 2019)
=============  ===============================================================  =====================================

Differential privacy and secure aggregation also compose with any algorithm
that averages (``differential_privacy=True`` with ``clip_norm``, ...;
``secure_aggregation=True`` with ``secagg_range``, ``secagg_dropout``).

:data:`PARAMETERS` is the one table of every algorithm's parameters (name,
default, range, scale): :func:`get`, the dashboard and the command line all
read it.

Examples
--------
>>> from fedlab_widgets import algorithms
>>> algorithms.get("fedprox", mu=0.1)
Algorithm(fedprox(mu=0.1))
>>> algorithms.get("fedprox", mu=-1)
Traceback (most recent call last):
ValueError: mu must be a number from 0 to 10; got -1
>>> algorithms.get("fedsgd")
Traceback (most recent call last):
ValueError: algorithm must be one of fedavg, fedprox, scaffold, fednova, fedavgm, fedadam, fedyogi, fedadagrad, dp-fedavg, fedper; got 'fedsgd'
>>> algorithms.get("fedprox", mu=0.1, secure_aggregation=True)
Algorithm(fedprox(mu=0.1, secagg))
>>> algorithms.get("fedavg", aggregator="median", secure_aggregation=True)
Traceback (most recent call last):
ValueError: secure_aggregation works with the mean aggregator only: the median aggregator needs each client's update, which secure aggregation hides from the server: only their sum is revealed
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ..params import Param, check_params
from .aggregators import AGGREGATOR_PARAMETERS, AGGREGATORS, fednova, weighted_mean
from ..secagg import SECAGG_PARAMETERS, SecureAggregation
from .base import Algorithm, ClientStore, RoundContext
from .privacy import DP_PARAMETERS, DifferentialPrivacy
from .robust import krum, median, multikrum, norm_clip, trimmed_mean
from .server_optimizers import ServerAdaptive, ServerOptimizer, ServerSGD

__all__ = ["NAMES", "PARAMETERS", "get", "Algorithm", "RoundContext", "ClientStore",
           "weighted_mean", "fednova", "median", "trimmed_mean", "krum", "multikrum", "norm_clip",
           "AGGREGATORS", "AGGREGATOR_PARAMETERS", "ServerOptimizer", "ServerSGD",
           "ServerAdaptive", "DifferentialPrivacy", "DP_PARAMETERS", "SecureAggregation",
           "SECAGG_PARAMETERS"]


def _server_lr(default: float) -> Param:
    return Param("server_lr", default, lo=0.0, lo_open=True, hi=100.0, log=True, ui=(1e-3, 10.0),
                 doc="server learning rate: x + server_lr * (aggregated step)")


_BETA1 = Param("beta1", 0.9, lo=0.0, hi=1.0, hi_open=True, ui=(0.0, 0.99),
               doc="first-moment decay (server momentum)")
_BETA2 = Param("beta2", 0.99, lo=0.0, hi=1.0, hi_open=True, ui=(0.9, 0.999),
               doc="second-moment decay")
_TAU = Param("tau", 1e-3, lo=0.0, lo_open=True, hi=1.0, log=True, ui=(1e-6, 1e-1),
             doc="adaptivity: added to sqrt(v); larger is closer to server SGD")

PARAMETERS: dict[str, tuple[Param, ...]] = {
    "fedavg": (),
    "fedprox": (Param("mu", 0.01, lo=0.0, hi=10.0, log=True, ui=(1e-4, 10.0),
                      doc="proximal weight: mu/2 ||w - x||^2 added to each client's loss"),),
    "scaffold": (_server_lr(1.0),),
    "fednova": (),
    "fedavgm": (_server_lr(1.0), Param("momentum", 0.9, lo=0.0, hi=1.0, hi_open=True,
                                       ui=(0.0, 0.99), doc="server momentum")),
    "fedadam": (_server_lr(0.01), _BETA1, _BETA2, _TAU),
    "fedyogi": (_server_lr(0.01), _BETA1, _BETA2, _TAU),
    "fedadagrad": (_server_lr(0.01), _BETA1, _TAU),
    "dp-fedavg": DP_PARAMETERS,
    "fedper": (),
}
NAMES: tuple[str, ...] = tuple(PARAMETERS)


def get(name: str = "fedavg", *, aggregator: str | Callable | None = None,
        client_steps: Sequence[Callable] = (), server_steps: Sequence[Callable] = (),
        differential_privacy: bool = False, secure_aggregation: bool = False,
        **params) -> Algorithm:
    """An algorithm by name, with its parameters checked against :data:`PARAMETERS`.

    Parameters
    ----------
    name : str
        One of :data:`NAMES`.
    aggregator : str or callable, optional
        Replace the weighted mean: a name from :data:`AGGREGATORS` (the robust ones:
        ``"median"``, ``"trimmed_mean"``, ``"krum"``, ``"multikrum"``, ``"norm_clip"``)
        or your function of the updates. Not for ``fednova``, whose normalised mean is
        the algorithm.
    client_steps, server_steps : list of callables, optional
        Extra steps on the updates (``step(updates, ctx)``) or on the aggregated
        update (``step(delta, ctx)``), run after the algorithm's own.
    **params
        The algorithm's parameters (see :data:`PARAMETERS`) and the named
        aggregator's (see :data:`AGGREGATOR_PARAMETERS`: ``trim_ratio``,
        ``num_byzantine``, ``max_norm``); missing ones take their defaults.

    Raises
    ------
    ValueError
        An unknown name (listing the valid ones), a parameter the algorithm does not
        have (listing its parameters), or a value outside its range (naming it).

    Examples
    --------
    >>> alg = get("fedadam", server_lr=0.03)
    >>> alg.params
    {'server_lr': 0.03, 'beta1': 0.9, 'beta2': 0.99, 'tau': 0.001}
    """
    if name not in PARAMETERS:
        raise ValueError(f"algorithm must be one of {', '.join(NAMES)}; got {name!r}")
    for flag, value in (("differential_privacy", differential_privacy),
                        ("secure_aggregation", secure_aggregation)):
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{flag} must be True or False; got {value!r}")
    dp_on = name == "dp-fedavg" or bool(differential_privacy)
    for flag, on, table in (("differential_privacy", dp_on, DP_PARAMETERS),
                            ("secure_aggregation", secure_aggregation, SECAGG_PARAMETERS)):
        stray = sorted(set(params) & {q.name for q in table})
        if stray and not on:
            raise ValueError(f"{', '.join(stray)} applies only with {flag}=True")
    agg_table = AGGREGATOR_PARAMETERS.get(aggregator, ()) if isinstance(aggregator, str) else ()
    agg_names = {q.name for q in agg_table}
    extra = tuple(agg_table) + (DP_PARAMETERS if dp_on and name != "dp-fedavg" else ()) \
        + (SECAGG_PARAMETERS if secure_aggregation else ())
    p = check_params(f"algorithm {name!r}" + (f" with aggregator {aggregator!r}"
                                              if isinstance(aggregator, str) else ""),
                     PARAMETERS[name] + extra, params)
    agg_params = {k: v for k, v in p.items() if k in agg_names}
    dp_params = {q.name: p.pop(q.name) for q in DP_PARAMETERS if q.name in p}
    sa_params = {q.name: p.pop(q.name) for q in SECAGG_PARAMETERS if q.name in p}
    p = {k: v for k, v in p.items() if k not in agg_names}
    kw: dict = dict(client_steps=client_steps, server_steps=server_steps)
    if dp_on:
        kw["differential_privacy"] = DifferentialPrivacy(**dp_params)
        if name == "dp-fedavg":
            p = dict(dp_params)
    if secure_aggregation:
        kw["secure_aggregation"] = SecureAggregation(**sa_params)
    if aggregator is not None:
        if name == "fednova":
            raise ValueError("aggregator does not apply to fednova: its normalised mean "
                             "is the algorithm")
        kw["aggregator"] = aggregator
        if isinstance(aggregator, str):
            kw["aggregator_params"] = agg_params
    if name == "fedprox":
        kw["mu"] = p["mu"]
    elif name == "scaffold":
        kw.update(control_variates=True, server_optimizer=ServerSGD(lr=p["server_lr"]))
    elif name == "fednova":
        kw["aggregator"] = "fednova"
    elif name == "fedper":
        kw["personal_head"] = True
    elif name == "fedavgm":
        kw["server_optimizer"] = ServerSGD(lr=p["server_lr"], momentum=p["momentum"])
    elif name in ("fedadam", "fedyogi", "fedadagrad"):
        kw["server_optimizer"] = ServerAdaptive(name[3:], lr=p["server_lr"],
                                                beta1=p["beta1"], beta2=p.get("beta2", 0.0),
                                                tau=p["tau"])
    return Algorithm(name, params=p, **kw)


def resolve(algorithm) -> Algorithm:
    """An :class:`Algorithm` from an algorithm, a name (its defaults) or None (FedAvg)."""
    if algorithm is None:
        return get("fedavg")
    if isinstance(algorithm, Algorithm):
        return algorithm
    if isinstance(algorithm, str):
        return get(algorithm)
    raise ValueError(f"algorithm must be a name ({', '.join(NAMES)}) or an Algorithm from "
                     f"fedlab_widgets.algorithms.get; got {algorithm!r}")
