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
``feddyn``     every local gradient gets ``alpha (w - x) - g_k``; ``g_k`` and the   ``dyn_alpha``
               server's ``h`` track the clients' drift (Acar et al. 2021)
``fedper``     each client keeps its own last layer (personal head); only the    --
               other layers are federated (Arivazhagan et al. 2019)
``ditto``      the global model trains as FedAvg; each client also trains a      ``lam``
               personal model pulled towards it by ``lam/2 ||v - w||^2``
               (Li, Hu, Beirami & Smith 2021)
``ifca``       ``num_clusters`` global models; each client trains the one with   ``num_clusters``
               its lowest loss, each averages its own clients (Ghosh et al. 2020)
``qffl``       q-FedAvg: clients weighted by ``loss^q``, so the worst-served     ``q``
               count more (Li, Sanjabi, Beirami & Smith 2020)
``fedasync``   asynchronous: each arriving model mixed in, weighted by its        ``mixing``, ``staleness``
               staleness (Xie, Koyejo & Gupta 2019; needs devices)
``fedbuff``    asynchronous: K arrivals buffered, staleness-weighted, then one    ``buffer_size``, ``server_lr``,
               server step (Nguyen et al. 2022; needs devices)                    ``staleness``
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
ValueError: algorithm must be one of fedavg, fedprox, scaffold, fednova, fedavgm, fedadam, fedyogi, fedadagrad, dp-fedavg, feddyn, fedper, ditto, ifca, qffl, fedasync, fedbuff; got 'fedsgd'
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
from ..registry import Registry
from .aggregators import AGGREGATOR_PARAMETERS, AGGREGATORS, fednova, weighted_mean
from ..secagg import SECAGG_PARAMETERS, SecureAggregation
from .base import Algorithm, ClientStore, RoundContext
from .ditto import PersonalModels
from .feddyn import DynamicRegulariser
from .ifca import ClusterModels
from .qffl import LossWeighting
from .privacy import DP_PARAMETERS, DifferentialPrivacy
from .robust import krum, median, multikrum, norm_clip, trimmed_mean
from .server_optimizers import ServerAdaptive, ServerOptimizer, ServerSGD

__all__ = ["ALGORITHMS", "NAMES", "PARAMETERS", "get", "Algorithm", "RoundContext", "ClientStore",
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

#: the algorithms (a :class:`~fedlab_widgets.registry.Registry`): each a recipe, the
#: :class:`Algorithm` pieces it changes from FedAvg, made from its checked parameters
ALGORITHMS = Registry("algorithm")


@ALGORITHMS.register("fedavg", doc="weighted mean of the updates, x + delta (McMahan et al. 2017)",
                     stragglers="drop")   # FedAvg as deployed drops stragglers; the others use their work
def _fedavg() -> dict:
    return {}


@ALGORITHMS.register("fedprox", Param("mu", 0.01, lo=0.0, hi=10.0, log=True, ui=(1e-4, 10.0),
                                      doc="proximal weight: mu/2 ||w - x||^2 added to each "
                                          "client's loss"),
                     doc="every local gradient gets mu * (w - x) (Li et al. 2020)")
def _fedprox(mu) -> dict:
    return {"mu": mu}


@ALGORITHMS.register("scaffold", _server_lr(1.0),
                     doc="control variates correct every local gradient by c - c_k "
                         "(Karimireddy et al. 2020, option II)")
def _scaffold(server_lr) -> dict:
    return {"control_variates": True, "server_optimizer": ServerSGD(lr=server_lr)}


@ALGORITHMS.register("fednova", doc="updates normalised by their local steps (Wang et al. 2020)",
                     own_aggregator="its normalised mean is the algorithm")
def _fednova() -> dict:
    return {"aggregator": "fednova"}


@ALGORITHMS.register("fedavgm", _server_lr(1.0),
                     Param("momentum", 0.9, lo=0.0, hi=1.0, hi_open=True, ui=(0.0, 0.99),
                           doc="server momentum"),
                     doc="server momentum (Hsu et al. 2019)")
def _fedavgm(server_lr, momentum) -> dict:
    return {"server_optimizer": ServerSGD(lr=server_lr, momentum=momentum)}


def _adaptive(kind: str):
    def recipe(server_lr, beta1, tau, beta2=0.0) -> dict:
        return {"server_optimizer": ServerAdaptive(kind, lr=server_lr, beta1=beta1, beta2=beta2,
                                                   tau=tau)}
    return recipe


ALGORITHMS.add("fedadam", _adaptive("adam"), (_server_lr(0.01), _BETA1, _BETA2, _TAU),
               doc="server Adam on the averaged update (Reddi et al. 2021)")
ALGORITHMS.add("fedyogi", _adaptive("yogi"), (_server_lr(0.01), _BETA1, _BETA2, _TAU),
               doc="server Yogi (Reddi et al. 2021)")
ALGORITHMS.add("fedadagrad", _adaptive("adagrad"), (_server_lr(0.01), _BETA1, _TAU),
               doc="server Adagrad (Reddi et al. 2021)")
ALGORITHMS.add("dp-fedavg", lambda **dp: {"differential_privacy": DifferentialPrivacy(**dp)},
               DP_PARAMETERS, doc="clip each update, sum, add Gaussian noise, divide by m "
                                  "(McMahan et al. 2018)", private=True)
@ALGORITHMS.register("feddyn", Param("dyn_alpha", 0.01, lo=0.0, lo_open=True, hi=10.0, log=True,
                                     ui=(1e-4, 1.0), doc="FedDyn's alpha, the dynamic regulariser's "
                                         "weight (not the Dirichlet alpha)"),
                     doc="a per-client linear term and a proximal term that move each client's "
                         "optimum to the global one (Acar et al. 2021)")
def _feddyn(dyn_alpha) -> dict:
    dyn = DynamicRegulariser(dyn_alpha)
    return {"mu": dyn_alpha, "corrections": [dyn.correction], "own_client_steps": [dyn.client_step],
            "own_server_steps": [dyn.server_step]}


ALGORITHMS.add("fedper", lambda: {"personal_head": True},
               doc="each client keeps its own last layer (Arivazhagan et al. 2019)")

ALGORITHMS.add("ditto", lambda lam: {"personal": PersonalModels(lam)},
               (Param("lam", 0.1, lo=0.0, hi=100.0, log=True, ui=(1e-3, 10.0),
                      doc="Ditto's pull of each personal model towards the global one: "
                          "lam/2 ||v_k - w||^2 (0: purely local; large: the global model)"),),
               doc="a personal model per client, trained towards the global one "
                   "(Li, Hu, Beirami & Smith 2021)")
ALGORITHMS.add("ifca", lambda num_clusters: {"personal": ClusterModels(num_clusters),
                                             "models_down": num_clusters},
               (Param("num_clusters", 2, lo=1, hi=16, kind="int", ui=(1, 8),
                      doc="IFCA's number of cluster models (1: FedAvg)"),),
               doc="several global models; each client trains the one that fits it best "
                   "(Ghosh, Chung, Yin & Ramchandran 2020)",
               own_aggregator="each cluster averages its own clients' updates")
ALGORITHMS.add("qffl", lambda q: {"own_client_steps": [LossWeighting(q).client_step]},
               (Param("q", 1.0, lo=0.0, hi=20.0, ui=(0.0, 10.0),
                      doc="q-FFL's fairness: clients weighted by loss^q (0: FedAvg)"),),
               doc="q-FedAvg: clients weighted by their loss to the power q "
                   "(Li, Sanjabi, Beirami & Smith 2020)",
               own_aggregator="its loss-weighted mean is the algorithm")

_STALENESS = (Param("staleness", "polynomial", kind="choice", choices=("constant", "polynomial", "hinge"),
                     doc="how an update tau versions late counts: 1, (1 + tau)^-a, or 1 up to b then "
                         "1 / (a (tau - b) + 1) (Xie et al. 2019)"),
              Param("staleness_a", 0.5, lo=0.0, hi=10.0, doc="the staleness weight's exponent or slope a"),
              Param("staleness_b", 4.0, lo=0.0, hi=1000.0, doc="hinge: versions late before the weight falls"))
ALGORITHMS.add("fedasync", lambda mixing, **s: {},
               (Param("mixing", 0.6, lo=0.0, lo_open=True, hi=1.0,
                      doc="alpha: x <- (1 - alpha s(tau)) x + alpha s(tau) x_k per arrival"), *_STALENESS),
               doc="every arriving client model is mixed into the global one, weighted by its "
                   "staleness (Xie, Koyejo & Gupta 2019)", asynchronous="fedasync", stragglers="partial")
ALGORITHMS.add("fedbuff", lambda buffer_size, server_lr, **s: {"server_optimizer": ServerSGD(lr=server_lr)},
               (Param("buffer_size", None, kind="int", lo=1, none="the clients per round",
                      doc="K: arrivals buffered before the server steps"), _server_lr(1.0), *_STALENESS),
               doc="arrivals buffered, staleness-weighted, the server steps after K of them "
                   "(Nguyen et al. 2022)", asynchronous="fedbuff", stragglers="partial")

PARAMETERS: dict[str, tuple[Param, ...]] = ALGORITHMS.table()
NAMES: tuple[str, ...] = ALGORITHMS.names()


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
    entry = ALGORITHMS.entry(name)
    for flag, value in (("differential_privacy", differential_privacy),
                        ("secure_aggregation", secure_aggregation)):
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{flag} must be True or False; got {value!r}")
    private = bool(entry.traits.get("private"))  # DP is the algorithm (dp-fedavg)
    dp_on = private or bool(differential_privacy)
    for flag, on, table in (("differential_privacy", dp_on, DP_PARAMETERS),
                            ("secure_aggregation", secure_aggregation, SECAGG_PARAMETERS)):
        stray = sorted(set(params) & {q.name for q in table})
        if stray and not on:
            raise ValueError(f"{', '.join(stray)} applies only with {flag}=True")
    named = isinstance(aggregator, str)
    agg_table = AGGREGATORS.table().get(aggregator, ()) if named else ()
    wrappers = (DP_PARAMETERS if dp_on and not private else ()) \
        + (SECAGG_PARAMETERS if secure_aggregation else ())
    p = check_params(f"algorithm {name!r}" + (f" with aggregator {aggregator!r}" if named else ""),
                     entry.params + tuple(agg_table) + wrappers, params)
    own = {q.name: p[q.name] for q in entry.params}
    kw: dict = dict(client_steps=client_steps, server_steps=server_steps)
    if dp_on and not private:
        kw["differential_privacy"] = DifferentialPrivacy(**{q.name: p[q.name] for q in DP_PARAMETERS})
    if secure_aggregation:
        kw["secure_aggregation"] = SecureAggregation(**{q.name: p[q.name] for q in SECAGG_PARAMETERS})
    recipe = entry.builder(**own)
    if aggregator is not None:
        if "aggregator" in recipe or entry.traits.get("own_aggregator"):
            raise ValueError(f"aggregator does not apply to {name}: "
                             f"{entry.traits.get('own_aggregator', 'it has its own')}")
        kw["aggregator"] = aggregator
        if named:
            kw["aggregator_params"] = {q.name: p[q.name] for q in agg_table}
    return Algorithm(name, params=own, **kw, **recipe)


def resolve(algorithm) -> Algorithm:
    """An :class:`Algorithm` from an algorithm, a name (its defaults) or None (FedAvg)."""
    return ALGORITHMS.resolve(algorithm, Algorithm, default="fedavg", make=get,
                              what="an Algorithm from fedlab_widgets.algorithms.get")
