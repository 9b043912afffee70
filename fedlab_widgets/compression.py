"""Compressed updates: what a client sends instead of its full float32 update.

A compressor is a client step on the round's ``[M, D]`` updates (it runs after
local training and any attack, before clipping, masking and aggregation) and says
how many bytes each client really uploads:

==============  ============================================================  ==========================================
name            what each client sends                                        bytes up per client
==============  ============================================================  ==========================================
``topk``        the ``fraction * D`` largest-magnitude coordinates, with       ``k * (4 + 4)``: float32 values and
                error feedback: what is not sent is added to the next          int32 indices
                update (Stich et al. 2018; Lin et al. 2018, DGC)
``randk``       ``fraction * D`` coordinates chosen at random, scaled by       ``k * 4 + 8``: values, and the seed
                ``D / k`` so that the update is unbiased                        that regenerates the indices
``quantize``    QSGD (Alistarh et al. 2017): per bucket of ``bucket_size``      ``ceil(D * bits / 8) + 4 * buckets``:
                coordinates, its norm and each coordinate's sign and level,    packed sign-and-level codes, and one
                stochastically rounded to one of ``2**(bits-1) - 1`` levels   float32 norm per bucket
                (unbiased)
==============  ============================================================  ==========================================

The compressed update is applied exactly as the server would decode it; the
simulation keeps it dense (zeros where nothing was sent) because that is the
same arithmetic. Error-feedback residuals live in the client-state store and are
created only for clients that are sampled.

Examples
--------
>>> from fedlab_widgets import compression
>>> topk = compression.get("topk", fraction=0.01)
>>> topk
Compressor(topk(fraction=0.01, error_feedback))
>>> topk.bytes_up(199_210)            # 1,993 values and indices instead of 796,840 bytes
15944
>>> compression.get("quantize", bits=8).bytes_up(199_210)   # a byte each, and 390 norms
200770
>>> compression.get("topk", fraction=2)
Traceback (most recent call last):
ValueError: fraction must be a number in (0, 1]; got 2
"""

from __future__ import annotations

import math

import torch

from .engines.base import ClientUpdates
from .params import Param
from .registry import Registry
from .seeds import generator

__all__ = ["COMPRESSORS", "NAMES", "COMPRESSION_PARAMETERS", "Compressor", "get", "resolve",
           "top_k", "random_k", "qsgd"]

_FRACTION = Param("fraction", 0.01, lo=0.0, lo_open=True, hi=1.0, log=True, ui=(1e-3, 1.0),
                  doc="share of the coordinates each client sends")
_VALUE_BYTES = 4   # float32
_INDEX_BYTES = 4   # int32


def _k(fraction: float, d: int) -> int:
    return max(1, min(d, math.ceil(fraction * d)))


def top_k(v: torch.Tensor, k: int) -> torch.Tensor:
    """Each row of ``v`` ``[M, D]`` with all but its ``k`` largest-magnitude entries zeroed."""
    idx = v.abs().topk(k, dim=1, sorted=False).indices
    return torch.zeros_like(v).scatter_(1, idx, v.gather(1, idx))


def random_k(v: torch.Tensor, k: int, generators, *, scale: bool = True) -> torch.Tensor:
    """Each row of ``v`` with ``k`` coordinates kept at random (row ``i`` drawn from
    ``generators[i]``), scaled by ``D / k`` when ``scale`` (unbiased)."""
    d = v.shape[1]
    out = torch.zeros_like(v)
    for i, g in enumerate(generators):
        idx = torch.randperm(d, generator=g)[:k]
        out[i, idx] = v[i, idx] * (d / k if scale else 1.0)
    return out


def qsgd(v: torch.Tensor, bits: int, bucket_size: int, generators) -> torch.Tensor:
    """QSGD stochastic quantisation of each row of ``v`` (Alistarh et al. 2017).

    Per bucket of ``bucket_size`` coordinates with norm ``n``, coordinate ``v_i``
    becomes ``n * sign(v_i) * l / s`` with ``s = 2**(bits-1) - 1`` levels and ``l``
    ``floor(s |v_i| / n)`` or one more, the latter with probability equal to the
    remainder: so ``E[Q(v)] = v``.
    """
    s = 2 ** (bits - 1) - 1
    m, d = v.shape
    bucket_size = min(bucket_size, d)   # a bucket larger than the model is the whole model
    nb = math.ceil(d / bucket_size)
    padded = torch.zeros(m, nb * bucket_size, dtype=v.dtype)
    padded[:, :d] = v
    b = padded.view(m, nb, bucket_size)
    norm = b.norm(dim=2, keepdim=True)
    r = torch.where(norm > 0, b.abs() / norm.clamp_min(torch.finfo(v.dtype).tiny), 0) * s
    low = r.floor()
    u = torch.stack([torch.rand(nb * bucket_size, generator=g, dtype=v.dtype)
                     for g in generators]).view_as(r)
    level = low + (u < (r - low)).to(v.dtype)
    q = (b.sign() * level * norm / s).view(m, -1)
    return q[:, :d].contiguous()


class Compressor:
    """A client step that compresses each update and counts the bytes it sends.

    Made by :func:`get`. ``compressor(updates, ctx)`` returns the updates as the
    server decodes them; :meth:`bytes_up` is what one client uploads.
    """

    def __init__(self, name: str, *, error_feedback: bool | None = None, **params):
        self.params = COMPRESSORS.build(name, **params)
        self.name = name
        if error_feedback is None:
            error_feedback = COMPRESSORS.trait(name, "error_feedback")
        if not isinstance(error_feedback, bool):
            raise ValueError(f"error_feedback must be True or False; got {error_feedback!r}")
        self.error_feedback = error_feedback

    def bytes_up(self, num_parameters: int) -> int:
        """Bytes one client uploads for a model of ``num_parameters`` parameters."""
        return COMPRESSORS.trait(self.name, "bytes")(self, num_parameters)

    def __call__(self, updates: ClientUpdates, ctx) -> ClientUpdates:
        v = updates.delta
        d = v.shape[1]
        if self.error_feedback:
            residual = ctx.store.gather("compression_residual", updates.clients, d, dtype=v.dtype)
            v = v + residual
        gens = [generator(ctx.seed, 6, ctx.round, k) for k in updates.clients]
        sent = COMPRESSORS.trait(self.name, "encode")(self, v, gens)
        if self.error_feedback:
            ctx.store.scatter("compression_residual", updates.clients, v - sent)
        return updates.replace(delta=sent)

    def label(self) -> str:
        ps = [f"{k}={v:g}" for k, v in self.params.items()
              if not (k == "bucket_size" and v == 512)]
        if self.error_feedback:
            ps.append("error_feedback")
        elif COMPRESSORS.trait(self.name, "error_feedback"):
            ps.append("no error_feedback")
        return f"{self.name}({', '.join(ps)})"

    def config(self) -> dict:
        return {"compression": self.name, "compression_params": dict(self.params),
                "error_feedback": self.error_feedback}

    def __repr__(self) -> str:
        return f"Compressor({self.label()})"


# -- what each compressor sends, and its bytes ------------------------------------------------------
def _topk(c: Compressor, v: torch.Tensor, gens) -> torch.Tensor:
    return top_k(v, _k(c.params["fraction"], v.shape[1]))


def _topk_bytes(c: Compressor, d: int) -> int:
    return _k(c.params["fraction"], d) * (_VALUE_BYTES + _INDEX_BYTES)


def _randk(c: Compressor, v: torch.Tensor, gens) -> torch.Tensor:
    # with error feedback the residual makes up for what is left out: no scaling
    return random_k(v, _k(c.params["fraction"], v.shape[1]), gens, scale=not c.error_feedback)


def _randk_bytes(c: Compressor, d: int) -> int:
    return _k(c.params["fraction"], d) * _VALUE_BYTES + 8


def _qsgd(c: Compressor, v: torch.Tensor, gens) -> torch.Tensor:
    return qsgd(v, c.params["bits"], c.params["bucket_size"], gens)


def _qsgd_bytes(c: Compressor, d: int) -> int:
    bits, bucket = c.params["bits"], min(c.params["bucket_size"], d)
    return math.ceil(d * bits / 8) + _VALUE_BYTES * math.ceil(d / bucket)


#: the compressors (a :class:`~fedlab_widgets.registry.Registry`), each with its parameters
#: and whether error feedback is on by default (without it top-k stalls)
COMPRESSORS = Registry("compression")
COMPRESSORS.add("topk", dict, (_FRACTION,), doc="the k largest coordinates, with error feedback",
                error_feedback=True, encode=_topk, bytes=_topk_bytes)
COMPRESSORS.add("randk", dict, (_FRACTION,), doc="k random coordinates, scaled (unbiased)",
                error_feedback=False, encode=_randk, bytes=_randk_bytes)
COMPRESSORS.add("quantize", dict, (
    Param("bits", 8, kind="int", lo=2, hi=16, ui=(2, 16),
          doc="bits per coordinate, sign included (QSGD: 2**(bits-1) - 1 levels)"),
    Param("bucket_size", 512, kind="int", lo=1, ui=(64, 4096),
          doc="coordinates sharing one float32 norm")), doc="QSGD: stochastic quantisation",
    error_feedback=False, encode=_qsgd, bytes=_qsgd_bytes)
COMPRESSION_PARAMETERS: dict[str, tuple[Param, ...]] = COMPRESSORS.table()
NAMES = COMPRESSORS.names()


def get(name: str, *, error_feedback: bool | None = None, **params) -> Compressor:
    """A compressor by name: ``"topk"`` / ``"randk"`` (``fraction``), ``"quantize"``
    (``bits``, ``bucket_size``).

    Parameters
    ----------
    name : {"topk", "randk", "quantize"}
    error_feedback : bool, optional
        Keep what was not sent and add it to the client's next update. Default: on
        for top-k (without it top-k stalls), off for the unbiased random-k and QSGD.
    **params
        See :data:`COMPRESSION_PARAMETERS`.

    Raises
    ------
    ValueError
        An unknown name or parameter, or a value outside its range (named).
    """
    return Compressor(name, error_feedback=error_feedback, **params)


def resolve(compression) -> Compressor | None:
    """None, a :class:`Compressor`, or a name (its defaults)."""
    return COMPRESSORS.resolve(compression, Compressor, make=get, what="compression.get(...)")
