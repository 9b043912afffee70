"""Secure aggregation: the server learns the sum of the clients' updates, and nothing else.

The arithmetic of Bonawitz et al. 2017 ("Practical Secure Aggregation for
Privacy-Preserving Machine Learning", CCS), run inside one process:

1. **Quantise.** Each client turns its vector into integers modulo ``2**32``
   (fixed point: ``round(v * scale)``, with ``scale`` a power of two small enough
   that the sum of all clients cannot wrap around).
2. **Agree on pairwise seeds.** Clients ``u`` and ``v`` share a seed ``s_uv``
   from a Diffie-Hellman exchange (``pk = g**sk mod P``, ``s_uv = pk_v**sk_u``). The
   group here is the integers modulo the Mersenne prime ``2**127 - 1``: it has
   the algebra of the real protocol, not its security (which needs an elliptic
   curve, authenticated channels and a PKI: out of scope, and said so).
3. **Share secrets.** Each client splits its secret key ``sk_u`` and a self-mask
   seed ``b_u`` into Shamir shares (t-of-n, over the same prime field) and gives
   one of each to every other client.
4. **Mask.** ``y_u = x_u + PRG(b_u) + sum_{v>u} PRG(s_uv) - sum_{v<u} PRG(s_uv)``
   modulo ``2**32``. One ``y_u`` alone is uniformly distributed: it tells the
   server nothing about ``x_u``.
5. **Drop out.** Some clients may vanish after masking; their ``y`` never arrive.
6. **Unmask.** For each survivor the server collects t shares of ``b_u``; for each
   dropped client t shares of ``sk_v``, from which it recomputes the survivors'
   pairwise masks toward it. Summing the survivors' ``y`` and removing those
   masks leaves exactly the sum of the survivors' quantised vectors.

:func:`secure_sum` runs one such round; :class:`SecureAggregation` plugs it into
the round pipeline (``algorithms.get(name, secure_aggregation=True)``), and
:func:`cost_model` gives its bytes per client beside FedAvg's.

Examples
--------
>>> import torch
>>> x = torch.tensor([[0.5, -1.0], [0.25, 2.0], [1.0, 0.0]])
>>> out = secure_sum(x, clients=[3, 5, 8], round=1, seed=0)
>>> out.total
tensor([1.7500, 1.0000], dtype=torch.float64)
>>> bool((out.masked[0] != encode(x)[0]).all())   # what the server sees of client 3
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch

from .params import Param, check_params
from .seeds import derive_seed, generator

__all__ = ["SECAGG_PARAMETERS", "SecureAggregation", "SecureSum", "secure_sum", "encode",
           "quantise", "dequantise", "shamir_share", "shamir_reconstruct", "cost_model",
           "FIELD_PRIME", "MODULUS"]

MODULUS = 2 ** 32                 # masked vectors live in Z_(2^32)
FIELD_PRIME = 2 ** 127 - 1        # Shamir shares and the (toy) Diffie-Hellman group
_G = 3                            # generator for the toy Diffie-Hellman

SECAGG_PARAMETERS: tuple[Param, ...] = (
    Param("secagg_range", 16.0, lo=0.0, lo_open=True, hi=1e6, log=True, ui=(0.1, 1000.0),
          doc="each coordinate is clipped to [-range, range] before fixed-point encoding"),
    Param("secagg_dropout", 0.0, lo=0.0, hi=0.5, hi_open=True, ui=(0.0, 0.45),
          doc="fraction of sampled clients that drop out after masking (< 1/2, so that "
              "the survivors hold enough shares)"),
)


# -- fixed point ------------------------------------------------------------------------------
def fixed_point_scale(value_range: float, num_clients: int) -> float:
    """The largest power of two such that ``num_clients`` values in
    ``[-value_range, value_range]`` sum without wrapping modulo ``2**32``."""
    return 2.0 ** math.floor(math.log2((2 ** 31 - 1) / (num_clients * value_range)))


def quantise(v: torch.Tensor, scale: float, value_range: float) -> torch.Tensor:
    """``round(clip(v) * scale)`` as int64 in ``[0, 2**32)`` (two's complement)."""
    q = torch.round(v.double().clamp(-value_range, value_range) * scale).to(torch.int64)
    return q % MODULUS


def encode(vectors: torch.Tensor, *, value_range: float = 16.0) -> torch.Tensor:
    """What each of ``M`` clients holds before masking: its row of ``vectors`` ``[M, D]`` in
    fixed point (:func:`quantise` at :func:`fixed_point_scale` for ``M`` clients)."""
    return quantise(vectors, fixed_point_scale(value_range, len(vectors)), value_range)


def dequantise(q: torch.Tensor, scale: float) -> torch.Tensor:
    """Integers modulo ``2**32`` back to float64 (values ``>= 2**31`` are negative)."""
    q = q % MODULUS
    return torch.where(q >= 2 ** 31, q - MODULUS, q).double() / scale


def _prg(seed: int, size: int) -> torch.Tensor:
    """A mask: ``size`` integers uniform in ``[0, 2**32)`` expanded from ``seed``."""
    g = torch.Generator().manual_seed(derive_seed(seed % (2 ** 63), 0x5EC))
    return torch.randint(0, MODULUS, (size,), generator=g, dtype=torch.int64)


# -- Shamir secret sharing over GF(FIELD_PRIME) -------------------------------------------------
def shamir_share(secret: int, holders: Sequence[int], threshold: int, *,
                 seed: int) -> dict[int, int]:
    """Split ``secret`` into one share per holder; any ``threshold`` of them rebuild it.

    Holder ``h`` gets the random degree ``threshold - 1`` polynomial at ``h + 1``.

    Examples
    --------
    >>> shares = shamir_share(1234, holders=range(5), threshold=3, seed=0)
    >>> shamir_reconstruct({h: shares[h] for h in (0, 2, 4)})
    1234
    >>> shamir_reconstruct({h: shares[h] for h in (0, 2)}) == 1234   # too few shares
    False
    """
    g = generator(seed, 15)
    coeffs = [int(secret) % FIELD_PRIME] + [
        int.from_bytes(torch.randint(0, 256, (16,), generator=g, dtype=torch.uint8)
                       .numpy().tobytes(), "big") % FIELD_PRIME for _ in range(threshold - 1)]
    out = {}
    for h in holders:
        x, y = int(h) + 1, 0
        for c in reversed(coeffs):
            y = (y * x + c) % FIELD_PRIME
        out[int(h)] = y
    return out


def shamir_reconstruct(shares: dict[int, int]) -> int:
    """The secret from shares ``{holder: share}`` (Lagrange interpolation at 0)."""
    xs = [h + 1 for h in shares]
    secret = 0
    for (h, y), xi in zip(shares.items(), xs):
        num = den = 1
        for xj in xs:
            if xj != xi:
                num = num * (-xj) % FIELD_PRIME
                den = den * (xi - xj) % FIELD_PRIME
        secret = (secret + y * num * pow(den, -1, FIELD_PRIME)) % FIELD_PRIME
    return secret


# -- one round ---------------------------------------------------------------------------------
@dataclass
class SecureSum:
    """One secure-aggregation round: what each side saw.

    Attributes
    ----------
    clients : list of int
        The clients that masked (in row order).
    survivors, dropped : list of int
        Who delivered a masked vector, and who dropped out after masking.
    masked : int64 Tensor ``[M, D]``
        What each client sent: all the server ever sees of one client.
    total : float64 Tensor ``[D]``
        The unmasked sum of the survivors' vectors, decoded.
    scale : float
        Fixed-point scale (``1 / scale`` is the resolution).
    threshold : int
        Shares needed to rebuild a secret.

    The server's view: no client's plain vector (each held :func:`encode` of its row).
    """

    clients: list[int]
    survivors: list[int]
    dropped: list[int]
    masked: torch.Tensor
    total: torch.Tensor
    scale: float
    threshold: int
    reconstructed: dict = field(default_factory=dict)
    dtype: torch.dtype = torch.float64   # the updates' dtype, which the decoded result takes


def secure_sum(vectors: torch.Tensor, clients: Sequence[int], *, round: int = 0, seed: int = 0,
               value_range: float = 16.0, dropout: float = 0.0,
               threshold: int | None = None) -> SecureSum:
    """Sum ``vectors`` ``[M, D]`` by Bonawitz et al.'s masking, with dropouts after masking.

    Parameters
    ----------
    vectors : Tensor ``[M, D]``
        Row ``i`` belongs to client ``clients[i]``.
    clients : list of int
        Distinct client ids.
    round, seed : int
        Keys, self-mask seeds and who drops out derive from them.
    value_range : float, default 16
        Coordinates are clipped to ``[-value_range, value_range]`` before encoding.
    dropout : float, default 0
        Fraction of clients (rounded down) that drop out after masking, in [0, 1/2).
    threshold : int, optional
        Shamir threshold t (default: a majority, ``M // 2 + 1``).

    Returns
    -------
    SecureSum
    """
    m, d = vectors.shape
    clients = [int(k) for k in clients]
    if len(clients) != m or len(set(clients)) != m:
        raise ValueError(f"clients must name each of the {m} rows once; got {clients}")
    if not 0.0 <= dropout < 0.5:
        raise ValueError(f"dropout must be a number from 0 to 0.5 (excluded); got {dropout}")
    t = m // 2 + 1 if threshold is None else int(threshold)
    if not 1 <= t <= m:
        raise ValueError(f"threshold must be an integer from 1 to {m}; got {threshold}")
    scale = fixed_point_scale(value_range, m)
    quantised = encode(vectors, value_range=value_range)   # each client encodes its own row

    # 2. keys (toy Diffie-Hellman) and 3. secrets shared among all clients
    sk = {k: derive_seed(seed, 12, round, k) % (FIELD_PRIME - 2) + 1 for k in clients}
    pk = {k: pow(_G, sk[k], FIELD_PRIME) for k in clients}
    b = {k: derive_seed(seed, 11, round, k) for k in clients}
    sk_shares = {k: shamir_share(sk[k], clients, t, seed=derive_seed(seed, 13, round, k))
                 for k in clients}
    b_shares = {k: shamir_share(b[k], clients, t, seed=derive_seed(seed, 14, round, k))
                for k in clients}

    # 4. masking: self mask, then each pair's mask added by one and subtracted by the other
    masked = quantised.clone()
    for i, u in enumerate(clients):
        masked[i] += _prg(b[u], d)
    for i, u in enumerate(clients):
        for j in range(i + 1, m):
            v = clients[j]
            mask = _prg(pow(pk[v], sk[u], FIELD_PRIME), d)   # = pow(pk[u], sk[v]): agreed
            masked[i] += mask
            masked[j] -= mask
    masked %= MODULUS

    # 5. dropouts after masking
    n_drop = math.floor(dropout * m)
    order = torch.randperm(m, generator=generator(seed, 16, round)).tolist()
    dropped = sorted(clients[i] for i in order[:n_drop])
    gone = set(dropped)
    survivors = [k for k in clients if k not in gone]
    row = {k: i for i, k in enumerate(clients)}
    if len(survivors) < t:
        raise ValueError(f"only {len(survivors)} clients survived, fewer than the threshold "
                         f"{t}: the round cannot be unmasked")

    # 6. unmasking with the survivors' shares (any t of them)
    holders = survivors[:t]
    total = masked[[row[u] for u in survivors]].sum(dim=0)
    rebuilt = {}
    for u in survivors:
        bu = shamir_reconstruct({h: b_shares[u][h] for h in holders})
        total -= _prg(bu, d)
        rebuilt[("b", u)] = bu
    for v in dropped:
        skv = shamir_reconstruct({h: sk_shares[v][h] for h in holders})
        rebuilt[("sk", v)] = skv
        for u in survivors:
            mask = _prg(pow(pk[u], skv, FIELD_PRIME), d)
            # u added the pair's mask if u comes first in client order, else subtracted it
            total += -mask if row[u] < row[v] else mask
    total %= MODULUS
    return SecureSum(clients=clients, survivors=survivors, dropped=dropped, masked=masked,
                     total=dequantise(total, scale), scale=scale, threshold=t,
                     reconstructed=rebuilt)


# -- cost --------------------------------------------------------------------------------------
_KEY, _SHARE, _AEAD, _SIG = 32, 32, 28, 64   # bytes: EC public key, share, nonce+tag, signature


def cost_model(num_parameters: int, num_clients: int, *, bits: int = 32) -> dict[str, int]:
    """Bytes one client sends and receives in one round, with and without secure aggregation.

    Counts the real protocol's messages (Bonawitz et al. 2017, section 4), with
    32-byte elliptic-curve keys and shares, authenticated encryption of the shares
    (28 bytes each) and 64-byte signatures:

    * up: two public keys; ``n - 1`` encrypted share pairs; the masked vector of
      ``D + 1`` coordinates at ``bits`` each (the weight rides along); a signature;
      ``n - 1`` shares for unmasking;
    * down: the model; everyone's keys; the ``n - 1`` share pairs meant for this client;
      the survivor lists.

    Examples
    --------
    >>> c = cost_model(199_210, 10)
    >>> c["fedavg_up"], c["secagg_up"]
    (796840, 798088)
    """
    n, d = int(num_clients), int(num_parameters)
    up = 2 * _KEY + (n - 1) * (2 * _SHARE + _AEAD) + (d + 1) * bits // 8 + _SIG + (n - 1) * _SHARE
    down = d * 4 + n * 2 * _KEY + (n - 1) * (2 * _SHARE + _AEAD) + 2 * n * 4 + n * _SIG
    return {"fedavg_up": d * 4, "fedavg_down": d * 4, "secagg_up": up, "secagg_down": down}


# -- the pipeline's steps ------------------------------------------------------------------------
class SecureAggregation:
    """Secure aggregation as a client step (mask) and a server step (unmask the sum).

    Made by ``algorithms.get(name, secure_aggregation=True, secagg_range=..., secagg_dropout=...)``.
    Clients send ``[(n_k / n_max) * delta_k, n_k / n_max]`` masked, so the server
    can form FedAvg's weighted mean from sums alone (with differential privacy they
    send ``[delta_k, 1]``: DP-FedAvg sums unweighted). Robust aggregators need the
    individual updates the server no longer sees, and are refused.
    """

    def __init__(self, *, secagg_range: float = 16.0, secagg_dropout: float = 0.0):
        p = check_params("secure aggregation", SECAGG_PARAMETERS,
                         dict(secagg_range=secagg_range, secagg_dropout=secagg_dropout))
        self.value_range = p["secagg_range"]
        self.dropout = p["secagg_dropout"]

    @property
    def params(self) -> dict:
        return {"secagg_range": self.value_range, "secagg_dropout": self.dropout}

    def mask(self, updates, ctx, *, weighted: bool = True):
        """Client step: encode and mask every row; the server then sees only ``masked``.

        Weighted, a client sends ``[(n_k / n_max) delta_k, n_k / n_max]``, ``n_max`` the largest
        client's size (public, as FedAvg's weights are): weights are at most 1, so the rows fit
        the range whenever the updates do, however unequal the clients.
        """
        if weighted:
            top = ctx.max_samples or ctx.total_samples / ctx.num_clients
            w = (updates.weight / top).to(updates.delta.dtype)
        else:
            w = torch.ones(len(updates), dtype=updates.delta.dtype)
        rows = torch.cat([updates.delta * w[:, None], w[:, None]], dim=1)
        out = secure_sum(rows, updates.clients, round=ctx.round, seed=ctx.seed,
                         value_range=self.value_range, dropout=self.dropout)
        out.dtype = updates.delta.dtype
        ctx.state["secagg"] = out       # the last round's views, for notebooks and tests
        return out

    def mask_step(self, updates, ctx, *, weighted: bool = True):
        """The client step of a recipe: the updates with ``delta`` gone and ``masked`` set."""
        return updates.replace(delta=None, masked=self.mask(updates, ctx, weighted=weighted))

    @staticmethod
    def unmasked_mean_of(updates) -> torch.Tensor:
        """The aggregate of a recipe: the weighted mean, from the masked updates' sums alone."""
        return SecureAggregation.unmasked_mean(updates.masked)

    @staticmethod
    def unmasked_sum_of(updates) -> torch.Tensor:
        """The aggregate of a recipe under DP: the survivors' sum, from the masked updates."""
        return SecureAggregation.unmasked_sum(updates.masked)

    @staticmethod
    def unmasked_mean(out: SecureSum) -> torch.Tensor:
        """Server: the weighted mean of the survivors, from the sums alone."""
        return (out.total[:-1] / out.total[-1]).to(out.dtype)

    @staticmethod
    def unmasked_sum(out: SecureSum) -> torch.Tensor:
        """Server: the survivors' (unweighted) sum, for DP-FedAvg's noise."""
        return out.total[:-1].to(out.dtype)

    def __repr__(self) -> str:
        return (f"SecureAggregation(secagg_range={self.value_range:g}, "
                f"secagg_dropout={self.dropout:g})")
