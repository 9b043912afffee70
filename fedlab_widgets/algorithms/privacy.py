"""Differential privacy for client updates: clip, sum, add Gaussian noise, account.

DP-FedAvg as in McMahan et al. 2018 ("Learning Differentially Private Recurrent
Language Models"), at the level of clients (a neighbouring dataset swaps one
client's whole data):

1. each client's update is clipped to L2 norm ``clip_norm`` (:meth:`DifferentialPrivacy.clip`);
2. the server sums the clipped updates, unweighted (:meth:`DifferentialPrivacy.sum`);
3. adds Gaussian noise of standard deviation ``noise_multiplier * clip_norm`` to the
   sum and divides by a *fixed* denominator, the number of clients sampled per
   round ``m`` (:meth:`DifferentialPrivacy.noise`). A fixed denominator keeps the
   sensitivity of the mean known: dividing by the number of survivors would not.

The privacy spent is computed with Google's ``dp-accounting`` library (RDP
accountant), for the sampling :class:`~fedlab_widgets.simulation.Simulation`
really does: a fixed number ``m`` of the ``K`` clients, drawn uniformly without
replacement, each round (``SampledWithoutReplacementDpEvent``). That accounting
is defined for the *replace-one* neighbouring relation (K is public), under
which swapping one client's clipped update for another's moves the sum by up to
``2 * clip_norm``: the Gaussian event therefore gets ``noise_multiplier / 2``.
The cheaper Poisson figure (Opacus, or ``PoissonSampledDpEvent``) would be
wrong here, because the simulation does not sample by Poisson.

Examples
--------
>>> dp = DifferentialPrivacy(clip_norm=1.0, noise_multiplier=1.0)
>>> round(dp.epsilon(rounds=100, num_clients=1000, clients_per_round=10), 2)
11.21

Only the sampling ratio m / K matters to the accountant; the noise on the *mean*,
``z * clip_norm / m``, shrinks with m. That is why DP-FL needs many clients per round.
>>> dp.epsilon(rounds=0, num_clients=1000, clients_per_round=100)
0.0

**Local DP** (``local_dp=True``, the mechanism of Flower's ``LocalDpMod``): each client clips
*and noises* its own update before sending, so the server (trusted or not) sees only noisy
updates. Each report is a Gaussian mechanism on its own, with no amplification by sampling (the
server sees who sent it), and the noise on the mean is ``z * clip_norm / sqrt(m)``: sqrt(m) times
central DP's at the same z. Its epsilon is that of a client that takes part in every round.
>>> DifferentialPrivacy(noise_multiplier=1.0, local_dp=True).epsilon(
...     rounds=100, num_clients=1000, clients_per_round=10) > 50
True
"""

from __future__ import annotations

import functools
import math

import torch

from ..engines.base import ClientUpdates
from ..params import Param, check_params
from ..seeds import generator

__all__ = ["DP_PARAMETERS", "DifferentialPrivacy", "clip_updates", "ADAPTIVE", "noise_for_epsilon"]

DP_PARAMETERS: tuple[Param, ...] = (
    Param("clip_norm", 1.0, lo=0.0, lo_open=True, log=True, ui=(1e-2, 10.0),
          doc="each client's update is clipped to this L2 norm (a huge one: no clipping)"),
    Param("noise_multiplier", 1.0, lo=0.0, hi=100.0, ui=(0.0, 5.0),
          doc="noise standard deviation on the sum, in units of clip_norm"),
    Param("delta", 1e-5, lo=0.0, lo_open=True, hi=1.0, hi_open=True, log=True,
          ui=(1e-8, 1e-2), doc="the delta of (epsilon, delta)-DP"),
    Param("adaptive_clipping", False, kind="bool",
          doc="the clip norm follows a quantile of the update norms (Andrew et al. 2021)"),
    Param("target_quantile", 0.5, lo=0.0, hi=1.0,
          doc="adaptive clipping: the share of updates meant to be left unclipped"),
    Param("clip_lr", 0.2, lo=0.0, lo_open=True, hi=10.0,
          doc="adaptive clipping: the clip norm's geometric step eta_C"),
    Param("count_noise", None, lo=0.0, lo_open=True, none="m / 20",
          doc="adaptive clipping: the standard deviation of the noise on the unclipped count"),
    Param("local_dp", False, kind="bool",
          doc="each client noises its own update before sending (local DP, as Flower's LocalDpMod)"),
)
#: the settings that only adaptive clipping reads (kept out of a fixed clip's params)
ADAPTIVE = ("adaptive_clipping", "target_quantile", "clip_lr", "count_noise")

# RDP orders: integers where the sampled-without-replacement bound is exact, a few
# fractional ones (interpolated by the library) for large noise.
_ORDERS = (1.25, 1.5, 1.75, *range(2, 65), 80, 96, 128, 192, 256, 512, 1024)


def clip_updates(updates: ClientUpdates, clip_norm: float) -> ClientUpdates:
    """Scale each client's update to L2 norm at most ``clip_norm`` (a client step).

    Examples
    --------
    >>> import torch
    >>> u = ClientUpdates([0, 1], torch.tensor([[3., 4.], [0.3, 0.4]]), torch.ones(2),
    ...                   torch.ones(2), torch.zeros(2))
    >>> clip_updates(u, 1.0).delta
    tensor([[0.6000, 0.8000],
            [0.3000, 0.4000]])
    """
    norms = updates.delta.norm(dim=1, keepdim=True)
    scale = (clip_norm / norms.clamp_min(1e-12)).clamp(max=1.0)
    return updates.replace(delta=updates.delta * scale)


@functools.lru_cache(maxsize=64)
def _rdp_per_round(num_clients: int, clients_per_round: int, noise_multiplier: float):
    """One round's RDP at :data:`_ORDERS` (a tuple), or None if the library hides it."""
    import dp_accounting as dpa
    from dp_accounting import rdp
    acc = rdp.RdpAccountant(list(_ORDERS), dpa.NeighboringRelation.REPLACE_ONE)
    acc.compose(_event(num_clients, clients_per_round, noise_multiplier))
    vec = getattr(acc, "_rdp", None)
    return None if vec is None else tuple(float(v) for v in vec)


def _event(num_clients: int, clients_per_round: int, noise_multiplier: float):
    import dp_accounting as dpa
    # replace-one: the sum's L2 sensitivity is 2 * clip_norm, so sigma/sensitivity = z / 2
    return dpa.SampledWithoutReplacementDpEvent(
        num_clients, clients_per_round, dpa.GaussianDpEvent(noise_multiplier / 2))


class DifferentialPrivacy:
    """Client-level DP for any mean-aggregating algorithm: clip, sum, noise, account.

    Parameters
    ----------
    clip_norm : float, default 1.0
        Each client's update is scaled to at most this L2 norm.
    noise_multiplier : float, default 1.0
        z: the noise on the sum has standard deviation ``z * clip_norm``. 0 gives
        clipping without privacy (epsilon is infinite).
    delta : float, default 1e-5
        The delta of (epsilon, delta)-DP; take it below 1 / num_clients.

    Examples
    --------
    >>> dp = DifferentialPrivacy(clip_norm=0.5, noise_multiplier=0.0)
    >>> dp.epsilon(rounds=1, num_clients=10, clients_per_round=10)
    inf
    """

    def __init__(self, *, clip_norm: float = 1.0, noise_multiplier: float = 1.0,
                 delta: float = 1e-5, adaptive_clipping: bool = False, target_quantile: float = 0.5,
                 clip_lr: float = 0.2, count_noise: float | None = None, local_dp: bool = False):
        p = check_params("differential privacy", DP_PARAMETERS,
                         dict(clip_norm=clip_norm, noise_multiplier=noise_multiplier, delta=delta,
                              adaptive_clipping=adaptive_clipping, target_quantile=target_quantile,
                              clip_lr=clip_lr, count_noise=count_noise, local_dp=local_dp))
        self.local_dp = p["local_dp"]
        if self.local_dp and p["adaptive_clipping"]:
            raise ValueError("adaptive_clipping cannot be combined with local_dp: the clip norm "
                             "follows the server's noisy count of a central mechanism")
        self.clip_norm = p["clip_norm"]
        self.noise_multiplier = p["noise_multiplier"]
        self.delta = p["delta"]
        self.adaptive_clipping = p["adaptive_clipping"]
        self.target_quantile, self.clip_lr, self.count_noise = (
            p["target_quantile"], p["clip_lr"], p["count_noise"])
        if self.adaptive_clipping and self.count_noise is not None and self.noise_multiplier > 0 \
                and 2 * self.count_noise <= self.noise_multiplier:
            raise ValueError(f"count_noise must be more than noise_multiplier / 2 = "
                             f"{self.noise_multiplier / 2:g} (the updates' share of the noise budget "
                             f"would be negative); got {self.count_noise:g}")

    @property
    def params(self) -> dict:
        out = {"clip_norm": self.clip_norm, "noise_multiplier": self.noise_multiplier,
               "delta": self.delta}
        if self.adaptive_clipping:
            out.update(adaptive_clipping=True, target_quantile=self.target_quantile, clip_lr=self.clip_lr)
            if self.count_noise is not None:
                out["count_noise"] = self.count_noise
        if self.local_dp:
            out["local_dp"] = True
        return out

    # -- adaptive clipping (Andrew, Thakkar, McMahan & Ramaswamy 2021) --------------------------
    def current_clip(self, ctx=None) -> float:
        """The clip norm of this round: fixed, or adaptive clipping's, kept in the server state."""
        if self.adaptive_clipping and ctx is not None:
            return float(ctx.state.get("dp_clip_norm", self.clip_norm))
        return self.clip_norm

    def count_std(self, clients_per_round: int) -> float:
        """sigma_b: the noise on the count of unclipped updates (the paper's default m / 20)."""
        return clients_per_round / 20 if self.count_noise is None else self.count_noise

    def update_noise_multiplier(self, clients_per_round: int) -> float:
        """z_Delta, the noise on the updates' sum, in units of the clip norm.

        With adaptive clipping the count takes part of the budget: the pair (sum, count) is one
        Gaussian query of noise multiplier z when ``z_Delta = (z^-2 - (2 sigma_b)^-2)^(-1/2)``
        (the paper's Theorem 1), so the accountant, charging z, also pays for the count.
        """
        z = self.noise_multiplier
        if not self.adaptive_clipping or z == 0:
            return z
        sb = self.count_std(clients_per_round)
        if 2 * sb <= z:
            raise ValueError(f"count_noise must be more than noise_multiplier / 2 = {z / 2:g}; "
                             f"got {sb:g} (m / 20 with m = {clients_per_round}: raise count_noise)")
        return (z ** -2 - (2 * sb) ** -2) ** -0.5

    def next_clip(self, clip: float, unclipped: float, clients_per_round: int) -> float:
        """The geometric update ``C exp(-eta_C (b - gamma))``, b the (noisy) unclipped share."""
        return clip * math.exp(-self.clip_lr * (unclipped / clients_per_round - self.target_quantile))

    @property
    def noise_std(self) -> float:
        """Standard deviation of the noise added to the *sum* of the clipped updates."""
        return self.noise_multiplier * self.clip_norm

    # -- the three steps of the round -----------------------------------------------------------
    def clip(self, updates: ClientUpdates, ctx=None) -> ClientUpdates:
        """Client step: every update clipped to ``clip_norm`` (adaptive clipping: to this round's
        clip norm, each client also reporting whether its update was within it)."""
        clip = self.current_clip(ctx)
        if ctx is None:
            return clip_updates(updates, clip)
        within = float((updates.delta.norm(dim=1) <= clip).sum())
        if self.adaptive_clipping:
            ctx.state["dp_unclipped"] = within
        ctx.observed.update(clip_norm=clip, clipped=1 - within / max(1, len(updates.delta)))
        updates = clip_updates(updates, clip)
        return self._local_noise(updates, ctx) if self.local_dp else updates

    def _local_noise(self, updates: ClientUpdates, ctx) -> ClientUpdates:
        """Local DP: client k adds its own ``N(0, (z * clip_norm)^2 I)`` (its generator: seed, round, k)."""
        if self.noise_multiplier == 0:
            return updates
        d = updates.delta
        noise = torch.stack([torch.randn(d.shape[1], generator=generator(ctx.seed, 11, ctx.round, int(k)),
                                         dtype=d.dtype) for k in updates.clients])
        return updates.replace(delta=d + self.noise_std * noise)

    @staticmethod
    def sum(updates: ClientUpdates) -> torch.Tensor:
        """Aggregator: the unweighted sum of the (clipped) updates."""
        return updates.delta.sum(dim=0)

    def noise(self, total: torch.Tensor, ctx) -> torch.Tensor:
        """Server step: ``(sum + N(0, (z * clip_norm)^2 I)) / m`` with m fixed per round."""
        if self.adaptive_clipping:
            return self._adaptive_noise(total, ctx)
        if self.noise_multiplier > 0 and not self.local_dp:
            g = generator(ctx.seed, 9, ctx.round)
            total = total + self.noise_std * torch.randn(total.shape, generator=g,
                                                         dtype=total.dtype)
        return total / ctx.clients_per_round

    def _adaptive_noise(self, total: torch.Tensor, ctx) -> torch.Tensor:
        m, clip = ctx.clients_per_round, self.current_clip(ctx)
        z = self.update_noise_multiplier(m)
        if z > 0:
            total = total + z * clip * torch.randn(total.shape, generator=generator(ctx.seed, 9, ctx.round),
                                                   dtype=total.dtype)
        count = ctx.state.pop("dp_unclipped", float(m))
        if self.noise_multiplier > 0:
            count += self.count_std(m) * float(torch.randn(1, generator=generator(ctx.seed, 10, ctx.round),
                                                           dtype=torch.float64))
        ctx.state.setdefault("dp_clip_norms", []).append(clip)
        ctx.state.setdefault("dp_unclipped_shares", []).append(count / m)
        ctx.state["dp_clip_norm"] = self.next_clip(clip, count, m)
        return total / m

    # -- accounting ---------------------------------------------------------------------------
    def epsilon(self, *, rounds: int, num_clients: int, clients_per_round: int) -> float:
        """Epsilon after ``rounds`` rounds, each sampling ``clients_per_round`` of
        ``num_clients`` clients without replacement (RDP accountant of dp-accounting).
        """
        if rounds <= 0:
            return 0.0
        if self.noise_multiplier == 0:
            return math.inf
        from dp_accounting import rdp
        if self.local_dp:
            return _local_epsilon(self.noise_multiplier, int(rounds), self.delta)
        per_round = _rdp_per_round(int(num_clients), int(clients_per_round),
                                   float(self.noise_multiplier))
        if per_round is None:  # the library changed its internals: compose afresh
            import dp_accounting as dpa
            acc = rdp.RdpAccountant(list(_ORDERS), dpa.NeighboringRelation.REPLACE_ONE)
            acc.compose(_event(num_clients, clients_per_round, self.noise_multiplier), rounds)
            return float(acc.get_epsilon(self.delta))
        eps, _ = rdp.rdp_privacy_accountant.compute_epsilon(
            _ORDERS, [rounds * v for v in per_round], self.delta)
        return float(eps)

    def __repr__(self) -> str:
        extra = (f", adaptive_clipping=True, target_quantile={self.target_quantile:g}"
                 if self.adaptive_clipping else "") + (", local_dp=True" if self.local_dp else "")
        return (f"DifferentialPrivacy(clip_norm={self.clip_norm:g}, "
                f"noise_multiplier={self.noise_multiplier:g}, delta={self.delta:g}{extra})")


@functools.lru_cache(maxsize=256)
def _local_epsilon(noise_multiplier: float, rounds: int, delta: float) -> float:
    """Local DP: ``rounds`` Gaussian reports of one client (sensitivity 2 * clip_norm), no sampling."""
    import dp_accounting as dpa
    from dp_accounting import rdp
    acc = rdp.RdpAccountant(list(_ORDERS), dpa.NeighboringRelation.REPLACE_ONE)
    acc.compose(dpa.GaussianDpEvent(noise_multiplier / 2), rounds)
    return float(acc.get_epsilon(delta))


def noise_for_epsilon(epsilon: float, *, rounds: int, num_clients: int, clients_per_round: int,
                      delta: float = 1e-5, local_dp: bool = False) -> float:
    """The smallest noise multiplier z whose epsilon after ``rounds`` rounds is at most ``epsilon``
    (dp-accounting's ``calibrate_dp_mechanism`` over the same events :meth:`DifferentialPrivacy.epsilon`
    charges): how to compare local and central DP at equal epsilon.

    Examples
    --------
    >>> z = noise_for_epsilon(5.0, rounds=20, num_clients=100, clients_per_round=10)
    >>> DifferentialPrivacy(noise_multiplier=z).epsilon(rounds=20, num_clients=100, clients_per_round=10) <= 5.0
    True
    """
    import dp_accounting as dpa
    from dp_accounting import rdp
    check_params("noise_for_epsilon", (Param("epsilon", 1.0, lo=0.0, lo_open=True),
                                       Param("rounds", 1, lo=1, kind="int")),
                 {"epsilon": epsilon, "rounds": rounds})
    if local_dp:
        def event(z):
            return dpa.SelfComposedDpEvent(dpa.GaussianDpEvent(z / 2), rounds)
    else:
        def event(z):
            return dpa.SelfComposedDpEvent(_event(num_clients, clients_per_round, z), rounds)
    z = dpa.calibrate_dp_mechanism(
        lambda: rdp.RdpAccountant(list(_ORDERS), dpa.NeighboringRelation.REPLACE_ONE), event,
        epsilon, delta, dpa.LowerEndpointAndGuess(1e-3, 1.0), tol=1e-4)
    return float(z)
