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

import copy
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
    count : list[list[int]]
        ``len(batch)`` of row ``i``'s step ``t`` (0 after its last step).
    segments : list[list[tuple[int, int, int]]]
        For step ``t``, ``(lo, hi, width)`` row ranges that together cover the rows
        still training (a prefix of the stack); rows ``lo:hi`` have similar batch
        sizes and are padded to ``width`` columns.
    steps : DoubleTensor [M]
    """

    pad_ratio = 0.75  # a row group's smallest batch is at least this times its largest

    def __init__(self, sim, round_: int, clients: list[int], dtype=torch.float32):
        E = sim.local_epochs
        sizes = [len(sim.partition.client_indices[k]) for k in clients]
        bs = [n if sim.batch_size is None else min(sim.batch_size, n) for n in sizes]
        nbs = [math.ceil(n / b) for n, b in zip(sizes, bs)]
        steps = [E * nb for nb in nbs]
        # most steps first, then largest batch; ties keep client order (stable).
        # More steps means more samples, so batch sizes are non-increasing too.
        order = sorted(range(len(clients)), key=lambda i: (-steps[i], -bs[i]))
        M, T, Bmax = len(clients), max(steps), max(bs)
        idx = torch.zeros(M, T, Bmax, dtype=torch.int64)
        w = torch.zeros(M, T, Bmax, dtype=dtype)
        count = torch.zeros(M, T, dtype=torch.int64)
        for row, i in enumerate(order):
            k, n, b, nb = clients[i], sizes[i], bs[i], nbs[i]
            # per-epoch weights: full batches get 1/b, the last one 1/(its size)
            we = torch.full((nb * b,), 1.0 / b, dtype=dtype)
            last = n - (nb - 1) * b
            we[(nb - 1) * b:(nb - 1) * b + last] = 1.0 / last
            we[n:] = 0.0
            we = we.view(nb, b)
            ce = torch.full((nb,), b, dtype=torch.int64)
            ce[-1] = last
            for epoch in range(E):
                o = sim.client_order(round_, k, epoch)
                if nb * b > n:  # pad the last batch with a valid index (weight 0)
                    o = torch.cat([o, o[:1].expand(nb * b - n)])
                idx[row, epoch * nb:(epoch + 1) * nb, :b] = o.view(nb, b)
                w[row, epoch * nb:(epoch + 1) * nb, :b] = we
                count[row, epoch * nb:(epoch + 1) * nb] = ce
            if b < Bmax:
                idx[row, :, b:] = idx[row, :, :1]
        srt = np.array([steps[i] for i in order])
        bsrt = np.array([bs[i] for i in order])  # non-increasing (see the sort key)
        cnt = count.numpy()
        # contiguous row groups of similar batch size, so that padding wastes little
        # (matters for full batch with unequal client sizes)
        groups, lo = [], 0
        for r in range(1, M + 1):
            if r == M or bsrt[r] < self.pad_ratio * bsrt[lo]:
                groups.append((lo, r))
                lo = r
        self.order = order
        self.idx, self.w, self.count = idx, w, count.tolist()
        self.segments = []
        for t in range(T):
            m = int((srt > t).sum())  # rows still training: a prefix
            seg = []
            for lo, hi in groups:
                if lo >= m:
                    break
                hi = min(hi, m)
                seg.append((lo, hi, int(cnt[lo:hi, t].max())))
            self.segments.append(seg)
        self.steps = torch.tensor([steps[i] for i in order], dtype=torch.float64)
        self.sizes = [sizes[i] for i in order]
        self.T = T


class VectorizedEngine:
    """Trains all sampled clients of a round at once on stacked parameters.

    Three ways to take one local SGD step of the ``m`` clients still training,
    chosen per step:

    ``"mlp"``
        The 2NN: a hand-written batched forward and backward pass (``bmm``).
    ``"vmap"``
        Any model: ``vmap(grad(loss))`` over the stacked parameters; wins when the
        per-client minibatches are small (``B < loop_min_batch``).
    ``"loop"``
        Any model: one autograd step per client of a worker module, on its rows of
        the stacked parameters. For convolutional models with minibatches of ``loop_min_batch``
        or more samples each client's step is already one large, well-threaded
        computation, and the grouped convolutions that ``vmap`` produces are
        slower on a CPU (measured ~20% for the CNN with B=50).
    """

    name = "vectorized"
    loop_min_batch = 32

    def __init__(self, sim):
        self.sim = sim
        model = sim.global_model
        self.names = [n for n, _ in model.named_parameters()]
        self.shapes = [p.shape for p in model.parameters()]
        self.dtypes = [p.dtype for p in model.parameters()]
        self.mlp = _is_plain_two_nn(model)
        self._stack: list[torch.Tensor] | None = None
        self._stack_m = 0
        if not self.mlp:
            self._build_func(model)

    # -- stacked parameter buffer (reused across rounds) -----------------------------
    def _stacked(self, M: int) -> list[torch.Tensor]:
        if self._stack is None or self._stack_m < M:
            self._stack = None  # free the old buffer first
            self._stack = [torch.empty((M, *s), dtype=d) for s, d in zip(self.shapes, self.dtypes)]
            self._stack_m = M
        return [s[:M] for s in self._stack]

    # -- generic paths: torch.func -------------------------------------------------------
    def _build_func(self, model: nn.Module) -> None:
        from torch.func import functional_call, grad_and_value, vmap

        buffers = {n: b for n, b in model.named_buffers()}
        names = self.names

        def weighted_loss(params, x, y, w):
            out = functional_call(model, ({n: p for n, p in zip(names, params)}, buffers), (x,))
            return (F.cross_entropy(out, y, reduction="none") * w).sum()

        self._vgrad = vmap(grad_and_value(weighted_loss))
        self._worker = copy.deepcopy(model).train()
        self._worker_params = list(self._worker.parameters())

    def _step_vmap(self, P, x, y, w, lr):
        with torch.enable_grad():
            grads, loss = self._vgrad(tuple(P), x, y, w)
        torch._foreach_add_(P, list(grads), alpha=-lr)
        return loss

    def _step_loop(self, P, xs, ys, lr):
        # a worker module and plain autograd: measured faster than torch.func.grad
        # per client for the CNN (its parameters are copied in, the step copied out)
        losses = []
        for i, (x, y) in enumerate(zip(xs, ys)):
            Pi = [p[i] for p in P]
            torch._foreach_copy_(self._worker_params, Pi)
            with torch.enable_grad():
                loss = F.cross_entropy(self._worker(x), y)
                grads = torch.autograd.grad(loss, self._worker_params)
            torch._foreach_add_(Pi, list(grads), alpha=-lr)
            losses.append(loss.detach())
        return torch.stack(losses)

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
        plan = _Plan(sim, round_, clients, self.dtypes[0])
        M = len(clients)
        global_params = [p.detach() for p in sim.global_model.parameters()]
        P = self._stacked(M)
        for s, g in zip(P, global_params):
            s.copy_(g.unsqueeze(0).expand_as(s))
        images, labels = sim.train.images, sim.train.labels
        lr = sim.lr
        loss_sum = torch.zeros(M, dtype=torch.float64)
        step = self._step_mlp if self.mlp else self._step_vmap
        for t, segments in enumerate(plan.segments):
            for lo, hi, b in segments:
                Pm = [p[lo:hi] for p in P]
                if not self.mlp and b >= self.loop_min_batch:
                    ixs = [plan.idx[i, t, :plan.count[i][t]] for i in range(lo, hi)]
                    loss = self._step_loop(Pm, [images.index_select(0, ix) for ix in ixs],
                                           [labels.index_select(0, ix) for ix in ixs], lr)
                else:
                    m = hi - lo
                    flat = plan.idx[lo:hi, t, :b].reshape(-1)
                    x = images.index_select(0, flat).view(m, b, *images.shape[1:])
                    y = labels.index_select(0, flat).view(m, b)
                    loss = step(Pm, x, y, plan.w[lo:hi, t, :b], lr)
                loss_sum[lo:hi] += loss
        sizes = torch.tensor(plan.sizes, dtype=torch.float64)
        total = float(sizes.sum())
        client_loss = loss_sum / plan.steps
        train_loss = float((sizes / total * client_loss).sum())
        avg = [torch.tensordot((sizes / total).to(p.dtype), p, dims=1) for p in P]
        return avg, train_loss


ENGINES["vectorized"] = VectorizedEngine
