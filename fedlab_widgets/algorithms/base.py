"""An FL algorithm as a composition of steps on the round's per-client updates.

One round of any algorithm here reads::

    rule    = algorithm.local_rule(clients, ctx)          # plain SGD, FedProx, SCAFFOLD
    updates = engine.train_clients(x, schedule, rule=rule) # delta [M, D], weight, steps, loss
    updates = algorithm.client_steps(updates, ctx)         # SCAFFOLD's c_k; DP clip; masking
    delta   = algorithm.aggregate(updates)                 # weighted mean, FedNova, robust, unmask
    delta   = algorithm.server_steps(delta, ctx)           # DP noise / fixed denominator
    x       = algorithm.server_optimizer.step(x, delta, ctx.state)

:class:`Algorithm` holds the pieces; :class:`RoundContext` is what a step may
read (the round, the global model ``x``, the client learning rate) and where it
may keep state across rounds (``ctx.state`` for the server, ``ctx.store`` per
client). A step is a plain function: ``client_step(updates, ctx) -> updates``,
``aggregator(updates) -> delta``, ``server_step(delta, ctx) -> delta``.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import torch

from ..engines.base import ClientUpdates, LocalRule
from .context import ClientStore, RoundContext
from ..params import check_params
from ..secagg import SecureAggregation, cost_model
from .aggregators import AGGREGATOR_PARAMETERS, AGGREGATORS
from .compat import check_compatible
from .fedper import PrivateHead
from .privacy import DifferentialPrivacy
from .scaffold import ControlVariates
from .server_optimizers import ServerOptimizer, ServerSGD

__all__ = ["Algorithm", "RoundContext", "ClientStore", "BYTES_PER_PARAMETER"]

BYTES_PER_PARAMETER = 4  # float32 on the wire


def _named(fn) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


class Algorithm:
    """A federated algorithm: a local rule, steps on the updates, an aggregator, a server optimiser.

    Usually made by :func:`fedlab_widgets.algorithms.get`; build one directly to
    compose your own.

    Parameters
    ----------
    name : str, default "custom"
    params : dict, optional
        The named parameters it was made with (recorded in the history).
    mu : float, default 0
        FedProx's proximal weight (every local gradient gets ``mu * (w - x)``).
    control_variates : bool, default False
        SCAFFOLD: correct every local gradient by ``c - c_k`` and update the control
        variates after local training (Karimireddy et al. 2020, option II).
    aggregator : str or callable, default "mean"
        ``"mean"`` (FedAvg's weighted mean), ``"fednova"`` (Wang et al. 2020), a robust
        aggregator (``"median"``, ``"trimmed_mean"``, ``"krum"``, ``"multikrum"``,
        ``"norm_clip"``: see :mod:`.robust`), or a function ``aggregator(updates) -> delta [D]``.
    aggregator_params : dict, optional
        The named aggregator's parameters (``trim_ratio``, ``num_byzantine``, ``max_norm``).
    client_steps : list of callables, optional
        ``step(updates, ctx) -> updates``, applied in order after local training.
    server_steps : list of callables, optional
        ``step(delta, ctx) -> delta``, applied in order after aggregation.
    server_optimizer : ServerOptimizer, optional
        Default: ``ServerSGD(lr=1)``, i.e. ``x + delta`` (FedAvg).
    differential_privacy : DifferentialPrivacy, optional
        Clip every update, sum them, add Gaussian noise, divide by the fixed number of
        clients per round (McMahan et al. 2018); the simulation records epsilon.
        Needs the mean aggregator and no control variates.
    secure_aggregation : SecureAggregation, optional
        Mask every update (Bonawitz et al. 2017) so that the server learns only the
        sum. Needs the mean aggregator: robust aggregators need the individual
        updates, which the server then never sees.
    corrections, own_client_steps, own_server_steps : lists of callables, optional
        A recipe's own pieces (FedDyn's): corrections ``(clients, ctx) -> [M, D]`` added to
        every local gradient, and steps on the updates and on the aggregate run before
        ``client_steps`` and ``server_steps`` (and not named in the run label).
    personal_head : bool, default False
        FedPer (Arivazhagan et al. 2019): each client keeps its own last layer,
        starts every round from it, and sends only the other layers' update.
    personal : object, optional
        A recipe's models beyond the one global model: Ditto's personal models
        (:class:`~.ditto.PersonalModels`) or IFCA's cluster models
        (:class:`~.ifca.ClusterModels`). Any of ``start(clients, ctx)``,
        ``before_training(schedule, ctx)``, ``client_step(updates, ctx)``,
        ``client_models(clients, ctx)``, ``test_models(ctx)``, ``check_lr(lr)``.
    models_down : int, default 1
        Models each sampled client downloads (IFCA: every cluster's).

    Examples
    --------
    A server step of your own: cap the norm of the averaged update.

    >>> def cap(delta, ctx):
    ...     return delta * min(1.0, 2.0 / float(delta.norm()))
    >>> alg = Algorithm("capped", server_steps=[cap])
    >>> alg.label()
    'capped(cap)'
    """

    def __init__(self, name: str = "custom", *, params: dict | None = None, mu: float = 0.0,
                 control_variates: bool = False,
                 aggregator: str | Callable = "mean", aggregator_params: dict | None = None,
                 client_steps: Sequence[Callable] = (),
                 server_steps: Sequence[Callable] = (),
                 server_optimizer: ServerOptimizer | None = None,
                 differential_privacy: DifferentialPrivacy | None = None,
                 secure_aggregation: SecureAggregation | None = None,
                 personal_head: bool = False, personal=None, models_down: int = 1,
                 corrections: Sequence[Callable] = (),
                 own_client_steps: Sequence[Callable] = (), own_server_steps: Sequence[Callable] = ()):
        self.name = name
        self.params = dict(params or {})
        self.mu = float(mu)
        self.scaffold = ControlVariates() if control_variates else None
        self.aggregator_params: dict = {}
        if isinstance(aggregator, str):
            if aggregator not in AGGREGATORS:
                raise ValueError(f"aggregator must be one of {', '.join(AGGREGATORS)} or a "
                                 f"function of the updates; got {aggregator!r}")
            self.aggregator_params = check_params(f"aggregator {aggregator!r}",
                                                  AGGREGATOR_PARAMETERS[aggregator],
                                                  aggregator_params or {})
            fn = AGGREGATORS[aggregator]
            self.aggregator_name = aggregator
            self.aggregator = functools.partial(fn, **self.aggregator_params) \
                if self.aggregator_params else fn
        elif callable(aggregator):
            if aggregator_params:
                raise ValueError("aggregator_params are for a named aggregator; bind your "
                                 "function's own parameters yourself")
            self.aggregator_name, self.aggregator = _named(aggregator), aggregator
        else:
            raise ValueError(f"aggregator must be a name or a function; got {aggregator!r}")
        for what, steps in (("client_steps", client_steps), ("server_steps", server_steps)):
            if not all(callable(s) for s in steps):
                raise ValueError(f"{what} must be a list of functions; got {steps!r}")
        self.client_steps_list = list(client_steps)
        # a recipe's own pieces (FedDyn's): local corrections ``(clients, ctx) -> [M, D]``
        # added to every local gradient, and state steps run before the custom ones
        self.corrections = list(corrections)
        self.own_client_steps, self.own_server_steps = list(own_client_steps), list(own_server_steps)
        self.server_steps_list = list(server_steps)
        self.server_optimizer = server_optimizer or ServerSGD(lr=1.0)
        self.dp, self.secagg = differential_privacy, secure_aggregation
        if not isinstance(personal_head, bool):
            raise ValueError(f"personal_head must be True or False; got {personal_head!r}")
        self.fedper = PrivateHead() if personal_head else None
        self.personal, self.models_down = personal, int(models_down)
        for what, obj, cls in (("differential_privacy", self.dp, DifferentialPrivacy),
                               ("secure_aggregation", self.secagg, SecureAggregation)):
            if obj is not None and not isinstance(obj, cls):
                raise ValueError(f"{what} must be a {cls.__name__} or None; got {obj!r}")
        check_compatible(self)
        self._recipe = self.recipe()

    def validate(self, clients_per_round: int, *, lr: float | None = None) -> None:
        """A ValueError now if a round of ``clients_per_round`` updates cannot be aggregated,
        or the algorithm cannot train with the clients' ``lr`` (Ditto's personal step)."""
        check = AGGREGATORS.trait(self.aggregator_name, "check_clients")
        if check is not None:
            check(self.aggregator_name, self.aggregator_params, clients_per_round)
        if lr is not None and hasattr(self.personal, "check_lr"):
            self.personal.check_lr(lr)

    def _hook(self, name: str):
        return getattr(self.personal, name, None)

    # -- what the round calls ---------------------------------------------------------------
    def local_rule(self, clients: Sequence[int], ctx: RoundContext) -> LocalRule:
        parts = ([] if self.scaffold is None else [self.scaffold.correction]) + self.corrections
        correction = None
        for part in parts:
            c = part(clients, ctx)
            correction = c if correction is None else correction + c
        return LocalRule(mu=self.mu, correction=correction)

    def local_start(self, clients: Sequence[int], ctx: RoundContext) -> torch.Tensor | None:
        """Where each client starts (``[M, D]``), or None for the global model (FedPer: its
        own head; IFCA: its cluster's model)."""
        if self.fedper is not None:
            return self.fedper.start(clients, ctx)
        start = self._hook("start")
        return None if start is None else start(clients, ctx)

    def before_training(self, schedule, ctx: RoundContext) -> None:
        """Client-side work before the round's training (Ditto trains the personal models)."""
        hook = self._hook("before_training")
        if hook is not None:
            hook(schedule, ctx)

    def client_models(self, clients: Sequence[int], ctx: RoundContext) -> dict:
        """The clients' own models (flat ``[D]``) where they differ from the global model:
        FedPer's global base with the client's head, Ditto's personal model, IFCA's cluster."""
        if self.fedper is not None:
            have = set(ctx.store.clients(self.fedper.store_key))
            return {k: self.fedper.personal_model(k, ctx.x, ctx.store, ctx.head)
                    for k in clients if k in have}
        hook = self._hook("client_models")
        return {} if hook is None else hook(list(clients), ctx)

    def test_models(self, ctx: RoundContext) -> torch.Tensor | None:
        """``[J, D]`` models the test set is scored with (the lowest loss wins), or None."""
        hook = self._hook("test_models")
        return None if hook is None else hook(ctx)

    def recipe(self) -> dict:
        """The round's steps in order, as plain callables: what this algorithm *is*.

        ``client``: steps on the ``[M, D]`` updates (FedPer keeps the heads, SCAFFOLD updates
        its control variates, your steps, DP clips, secure aggregation masks); ``aggregate``:
        updates -> ``[D]`` (the aggregator, DP's sum, or secure aggregation's unmasked sum or
        mean); ``server``: steps on the aggregate (DP's noise, your steps). DP and secure
        aggregation wrap any recipe by adding their steps.
        """
        client, server = [], []
        if self._hook("client_step") is not None:
            client.append(self.personal.client_step)
        if self.fedper is not None:
            client.append(lambda u, ctx: self.fedper.keep_heads(u, ctx, ctx.start))
        if self.scaffold is not None:
            client.append(self.scaffold.step)
        client += self.own_client_steps + self.client_steps_list
        aggregate = self.aggregator
        if self.dp is not None:
            client.append(self.dp.clip)
            server.append(self.dp.noise)
            aggregate = self.dp.sum
        server += self.own_server_steps + self.server_steps_list
        if self.secagg is not None:   # from here on the server holds only masked vectors
            client.append(functools.partial(self.secagg.mask_step, weighted=self.dp is None))
            aggregate = SecureAggregation.unmasked_sum_of if self.dp is not None \
                else SecureAggregation.unmasked_mean_of
        return {"client": client, "aggregate": aggregate, "server": server}

    def client_steps(self, updates: ClientUpdates, ctx: RoundContext) -> ClientUpdates:
        for step in self._recipe["client"]:
            updates = step(updates, ctx)
        return updates

    def aggregate(self, updates: ClientUpdates) -> torch.Tensor:
        return self._recipe["aggregate"](updates)

    def server_steps(self, delta: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        for step in self._recipe["server"]:
            delta = step(delta, ctx)
        return delta

    def server_update(self, x: torch.Tensor, delta: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        return self.server_optimizer.step(x, delta, ctx.state)

    # -- description --------------------------------------------------------------------------
    @property
    def payload(self) -> int:
        """Model-sized vectors sent each way per client: 2 for SCAFFOLD (x and c), else 1."""
        return 2 if self.scaffold is not None else 1

    def bytes_per_client(self, num_parameters: int, clients_per_round: int) -> tuple[int, int]:
        """Bytes (down, up) per sampled client per round: float32 vectors (down: every model
        the client needs, e.g. IFCA's ``num_clusters``), and secure
        aggregation's keys, shares and masked vector from :func:`~fedlab_widgets.secagg.cost_model`."""
        plain = num_parameters * BYTES_PER_PARAMETER * self.payload
        if self.secagg is None:
            return plain * self.models_down, plain
        c = cost_model(num_parameters, clients_per_round)
        return c["secagg_down"], c["secagg_up"]

    def epsilon(self, rounds: int, num_clients: int, clients_per_round: int) -> float:
        """DP epsilon spent after ``rounds`` rounds (NaN without differential privacy)."""
        if self.dp is None:
            return float("nan")
        return self.dp.epsilon(rounds=rounds, num_clients=num_clients,
                               clients_per_round=clients_per_round)

    def label(self) -> str:
        """``"fedprox(mu=0.01)"``, ``"fedavg"``, ... as in run labels."""
        ps = ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool)
                       else f"{k}={v}" for k, v in self.params.items())
        extra = [_named(s) for s in self.client_steps_list + self.server_steps_list]
        if self.aggregator_name not in ("mean", "fednova"):
            extra[:0] = [f"aggregator={self.aggregator_name}"] + [
                f"{k}={v:g}" for k, v in self.aggregator_params.items()]
        if self.dp is not None and self.name != "dp-fedavg":
            extra.append("dp(" + ", ".join(f"{k}={v:g}" for k, v in self.dp.params.items()) + ")")
        if self.secagg is not None:
            extra.append("secagg" + ("" if not self.secagg.dropout
                                     else f"(dropout={self.secagg.dropout:g})"))
        inner = ", ".join(x for x in [ps] + extra if x)
        return f"{self.name}({inner})" if inner else self.name

    def config(self) -> dict:
        return {"algorithm": self.name, "algorithm_params": dict(self.params),
                "aggregator": self.aggregator_name,
                "aggregator_params": dict(self.aggregator_params),
                "client_steps": [_named(s) for s in self.client_steps_list],
                "server_steps": [_named(s) for s in self.server_steps_list],
                "differential_privacy": self.dp is not None,
                "dp_params": {} if self.dp is None else self.dp.params,
                "secure_aggregation": self.secagg is not None,
                "personal_head": self.fedper is not None,
                "secagg_params": {} if self.secagg is None else self.secagg.params}

    def __repr__(self) -> str:
        return f"Algorithm({self.label()})"
