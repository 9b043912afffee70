"""A vectorised FedAvg engine: all sampled clients of a round train as one computation.

The parameters of the ``M`` sampled clients are stacked along a new leading axis
(``[M, *shape]``) and every local SGD step of every client is done at once:

* the 2NN (:class:`~fedlab_widgets.models.TwoNN`) uses a hand-written forward and
  backward pass made of batched matrix products (``bmm``/``baddbmm``), which on a
  CPU is several times faster than ``torch.func`` for such a small network;
* any other model (the CNNs) uses ``torch.func.vmap(torch.func.grad(...))`` over
  ``torch.func.functional_call``.

FedAvg semantics are kept exactly: client ``k`` takes the same minibatches in the
same order as in :class:`~fedlab_widgets.simulation.SequentialEngine` (from
``sim.client_order``; consecutive slices of size ``b = min(B, n_k)``, the last one
smaller; full batch when ``B`` is None) and each step minimises that minibatch's
mean cross-entropy. Minibatches of different sizes are padded to a common size and
the padding gets weight 0 (``loss_k = sum(w * l)`` with ``w = 1 / len(batch)``).
Clients are sorted by their number of local steps, longest first, so the clients
still training at step ``t`` are a prefix of the stack: each step works on views
``params[:m_t]`` and finished clients cost nothing (no masking, no copy).

Nothing is kept per client between rounds: a round builds an index plan for its
clients' minibatches, gathers each step's samples from the shared in-memory
tensors, and reuses one stacked parameter buffer.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .models import TwoNN
from .simulation import ENGINES

__all__ = ["VectorizedEngine"]


def _is_plain_two_nn(model: nn.Module) -> bool:
    """True for a TwoNN whose forward is the stock Linear-ReLU-Linear-ReLU-Linear."""
    return (type(model) is TwoNN and isinstance(model.fc1, nn.Linear)
            and isinstance(model.fc2, nn.Linear) and isinstance(model.fc3, nn.Linear)
            and all(m.bias is not None for m in (model.fc1, model.fc2, model.fc3))
            and len(list(model.buffers())) == 0)


class _Plan:
    """The minibatch schedule of one round, clients sorted by steps (longest first).

    Attributes
    ----------
    order : list[int]
        Positions in ``clients`` of the stacked clients (stack row -> client).
    idx : LongTensor [M, T, Bmax]
        Sample indices of client row ``i``'s step ``t`` (padding repeats a valid index).
    w : FloatTensor [M, T, Bmax]
        ``1 / len(batch)`` on real samples, 0 on padding and after the last step.
    active : list[int]
        Number of rows still training at step ``t`` (a prefix of the stack).
    width : list[int]
        The largest batch among the active rows at step ``t`` (columns used).
    steps : LongTensor [M]
    """

    def __init__(self, sim, round_: int, clients: list[int]):
        E = sim.local_epochs
        sizes = [len(sim.partition.client_indices[k]) for k in clients]
        bs = [n if sim.batch_size is None else min(sim.batch_size, n) for n in sizes]
        nbs = [math.ceil(n / b) for n, b in zip(sizes, bs)]
        steps = [E * nb for nb in nbs]
        # longest first; ties keep client order (stable)
        order = sorted(range(len(clients)), key=lambda i: -steps[i])
        M, T, Bmax = len(clients), max(steps), max(bs)
        idx = torch.zeros(M, T, Bmax, dtype=torch.int64)
        w = torch.zeros(M, T, Bmax, dtype=torch.float32)
        for row, i in enumerate(order):
            k, n, b, nb = clients[i], sizes[i], bs[i], nbs[i]
            # per-epoch weights: full batches get 1/b, the last one 1/(its size)
            we = torch.full((nb * b,), 1.0 / b, dtype=torch.float32)
            last = n - (nb - 1) * b
            we[(nb - 1) * b:(nb - 1) * b + last] = 1.0 / last
            we[n:] = 0.0
            we = we.view(nb, b)
            for epoch in range(E):
                o = sim.client_order(round_, k, epoch)
                if nb * b > n:  # pad the last batch with a valid index (weight 0)
                    o = torch.cat([o, o[:1].expand(nb * b - n)])
                idx[row, epoch * nb:(epoch + 1) * nb, :b] = o.view(nb, b)
                w[row, epoch * nb:(epoch + 1) * nb, :b] = we
            if b < Bmax:
                idx[row, :, b:] = idx[row, :, :1]
        srt = np.array([steps[i] for i in order])
        bsrt = np.array([bs[i] for i in order])
        self.order = order
        self.idx, self.w = idx, w
        self.active = [int((srt > t).sum()) for t in range(T)]
        # rows are sorted by steps, not batch size, so take the max over the prefix
        cummax_b = np.maximum.accumulate(bsrt)
        self.width = [int(cummax_b[m - 1]) for m in self.active]
        self.steps = torch.tensor([steps[i] for i in order], dtype=torch.float32)
        self.sizes = [sizes[i] for i in order]
        self.T = T


class VectorizedEngine:
    """Trains all sampled clients of a round at once on stacked parameters."""

    name = "vectorized"

    def __init__(self, sim):
        self.sim = sim
        model = sim.global_model
        self.names = [n for n, _ in model.named_parameters()]
        self.shapes = [p.shape for p in model.parameters()]
        self.mlp = _is_plain_two_nn(model)
        self._stack: list[torch.Tensor] | None = None
        self._stack_m = 0
        if not self.mlp:
            self._build_func(model)

    # -- stacked parameter buffer (reused across rounds) -----------------------------
    def _stacked(self, M: int) -> list[torch.Tensor]:
        if self._stack is None or self._stack_m < M:
            self._stack = [torch.empty((M, *s), dtype=torch.float32) for s in self.shapes]
            self._stack_m = M
        return [s[:M] for s in self._stack]

    # -- generic path: torch.func ---------------------------------------------------------
    def _build_func(self, model: nn.Module) -> None:
        from torch.func import functional_call, grad_and_value, vmap

        self._func_model = model
        buffers = {n: b for n, b in model.named_buffers()}
        names = self.names

        def loss_fn(params, x, y, w):
            out = functional_call(model, ({n: p for n, p in zip(names, params)}, buffers), (x,))
            return (F.cross_entropy(out, y, reduction="none") * w).sum()

        self._vgrad = vmap(grad_and_value(loss_fn))

    def _step_func(self, P, x, y, w, lr):
        grads, loss = self._vgrad(tuple(P), x, y, w)
        torch._foreach_add_(P, list(grads), alpha=-lr)
        return loss

    # -- 2NN path: hand-written batched forward/backward ------------------------------
    @staticmethod
    def _step_mlp(P, x, y, w, lr):
        W1, b1, W2, b2, W3, b3 = P
        x = x.flatten(2)                                             # [m, B, 784]
        h1 = torch.baddbmm(b1.unsqueeze(1), x, W1.transpose(1, 2)).relu_()
        h2 = torch.baddbmm(b2.unsqueeze(1), h1, W2.transpose(1, 2)).relu_()
        z3 = torch.baddbmm(b3.unsqueeze(1), h2, W3.transpose(1, 2))  # [m, B, 10]
        logp = torch.log_softmax(z3, dim=-1)
        yi = y.unsqueeze(-1)
        loss = -(logp.gather(-1, yi).squeeze(-1) * w).sum(1)        # [m]
        wc = w.unsqueeze(-1)
        g3 = logp.exp_().mul_(wc)                                    # softmax * w
        g3.scatter_add_(-1, yi, -wc)                                 # - onehot * w
        dh2 = torch.bmm(g3, W3).mul_(h2 > 0)                         # [m, B, 200]
        dh1 = torch.bmm(dh2, W2).mul_(h1 > 0)
        W3.baddbmm_(g3.transpose(1, 2), h2, alpha=-lr)
        b3.sub_(g3.sum(1), alpha=lr)
        W2.baddbmm_(dh2.transpose(1, 2), h1, alpha=-lr)
        b2.sub_(dh2.sum(1), alpha=lr)
        W1.baddbmm_(dh1.transpose(1, 2), x, alpha=-lr)
        b1.sub_(dh1.sum(1), alpha=lr)
        return loss

    # -- the round ------------------------------------------------------------------------
    @torch.no_grad()
    def train_round(self, round_: int, clients: list[int]) -> tuple[list[torch.Tensor], float]:
        sim = self.sim
        plan = _Plan(sim, round_, clients)
        M = len(clients)
        global_params = [p.detach() for p in sim.global_model.parameters()]
        P = self._stacked(M)
        for s, g in zip(P, global_params):
            s.copy_(g.unsqueeze(0).expand_as(s))
        images, labels = sim.train.images, sim.train.labels
        lr = sim.lr
        step = self._step_mlp if self.mlp else self._step_func
        loss_sum = torch.zeros(M)
        for t in range(plan.T):
            m, b = plan.active[t], plan.width[t]
            ix = plan.idx[:m, t, :b]
            flat = ix.reshape(-1)
            x = images.index_select(0, flat).view(m, b, *images.shape[1:])
            y = labels.index_select(0, flat).view(m, b)
            w = plan.w[:m, t, :b]
            Pm = [p[:m] for p in P]
            if self.mlp:
                loss = step(Pm, x, y, w, lr)
            else:
                with torch.enable_grad():
                    loss = step(Pm, x, y, w, lr)
            loss_sum[:m] += loss
        sizes = torch.tensor(plan.sizes, dtype=torch.float64)
        total = float(sizes.sum())
        client_loss = (loss_sum / plan.steps).double()
        train_loss = float((sizes / total * client_loss).sum())
        coef = (sizes / total).to(torch.float32)
        avg = [torch.tensordot(coef, p, dims=1) for p in P]
        return avg, train_loss


ENGINES["vectorized"] = VectorizedEngine
