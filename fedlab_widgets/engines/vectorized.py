"""The fast engine: all sampled clients of a round train as one computation.

The ``M`` clients' parameters are stacked layer by layer (one contiguous
``[M, *shape]`` tensor per parameter) and every local SGD step of every client is
done at once:

* the 2NN (:class:`~fedlab_widgets.models.TwoNN`) uses a hand-written forward and
  backward pass made of batched matrix products (``bmm``/``baddbmm``), which on a
  CPU is several times faster than ``torch.func`` for such a small network;
* any other model (the CNNs) uses ``torch.func.vmap(torch.func.grad(...))`` over
  ``torch.func.functional_call`` when a client's step is small, or, when it is
  large (the CNN even at B = 10), plain autograd client after client on one
  worker module.

The semantics are those of :class:`~fedlab_widgets.engines.sequential.SequentialEngine`
exactly: client ``k`` takes the schedule's minibatches in order and each step
minimises that minibatch's mean cross-entropy, plus the local rule's correction.
Minibatches of different sizes are padded to a common size and the padding gets
weight 0 (``loss_k = sum(w * l)`` with ``w = 1 / len(batch)``). The schedule's
rows are sorted by number of steps, longest first, so the clients still training
at step ``t`` are a prefix of the stack: each step works on ``rows[:m_t]`` and
finished clients cost nothing. At the end the updates are one subtraction per
layer, ``stack - x``, written into one reused ``[M, D]`` tensor.

Why per-layer stacks and not one flat ``[M, D]`` buffer with per-layer views: with
two threads an in-place batched matmul (``W.baddbmm_``) on a view whose batch
stride is not its matrix size runs at half speed (measured 0.45 against 0.23 ms
for the 2NN's first layer, M=10), which made the whole round ~30% slower; one
copy into the update tensor per round costs ~1 ms.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models import TwoNN
from .base import ClientUpdates, FlatLayout, LocalRule, Schedule

__all__ = ["VectorizedEngine"]


def _forward_flops(model: nn.Module, train) -> int:
    """Forward FLOPs of one training sample through ``model`` (counted by torch, once)."""
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(train.images[:2])
    return counter.get_total_flops() // 2


def _is_plain_two_nn(model: nn.Module) -> bool:
    """True for a TwoNN whose forward is the stock Linear-ReLU-Linear-ReLU-Linear."""
    return (type(model) is TwoNN and isinstance(model.fc1, nn.Linear)
            and isinstance(model.fc2, nn.Linear) and isinstance(model.fc3, nn.Linear)
            and all(m.bias is not None for m in (model.fc1, model.fc2, model.fc3))
            and len(list(model.buffers())) == 0)


class _Plan:
    """A schedule as padded index and weight tensors, and the row groups of each step.

    Attributes
    ----------
    idx : LongTensor [M, T, Bmax]
        Sample indices of row ``i``'s step ``t`` (padding holds index 0, weight 0).
    w : FloatTensor [M, T, Bmax]
        ``1 / len(batch)`` on real samples, 0 on padding and after the last step.
    count : list[list[int]]
        ``len(batch)`` of row ``i``'s step ``t`` (0 after its last step).
    segments : list[list[tuple[int, int, int]]]
        For step ``t``, ``(lo, hi, width)`` row ranges that together cover the rows
        still training (a prefix of the rows); rows ``lo:hi`` have similar batch
        sizes and are padded to ``width`` columns.
    """

    pad_ratio = 0.75  # a row group's smallest batch is at least this times its largest

    def __init__(self, schedule: Schedule, dtype=torch.float32):
        M = len(schedule)
        steps = schedule.steps.tolist()
        bmax = [max(b) for b in schedule.batch_sizes]
        T, B = max(steps), max(bmax)
        idx = torch.zeros(M, T, B, dtype=torch.int64)
        w = torch.zeros(M, T, B, dtype=dtype)
        count = torch.zeros(M, T, dtype=torch.int64)
        for row in range(M):
            t, b = steps[row], bmax[row]
            s = torch.tensor(schedule.batch_sizes[row], dtype=torch.int64)
            mask = torch.arange(b) < s[:, None]                       # [t, b]
            ix = torch.zeros(t, b, dtype=torch.int64)
            ix[mask] = schedule.indices[row]                          # row-major: batch order
            idx[row, :t, :b] = ix
            w[row, :t, :b] = torch.where(mask, 1.0 / s[:, None].to(dtype), 0.0)
            count[row, :t] = s
        cnt = count.numpy()
        srt = np.array(steps)
        # contiguous row groups of similar batch size, so that padding wastes little
        # (matters for full batch with unequal client sizes)
        groups, lo = [], 0
        for r in range(1, M + 1):
            if r == M or bmax[r] < self.pad_ratio * bmax[lo]:
                groups.append((lo, r))
                lo = r
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


class VectorizedEngine:
    """Trains all clients of a schedule at once on stacked parameters (one ``[M, *shape]`` per layer).

    Three ways to train, chosen per round:

    ``"mlp"``
        The 2NN: a hand-written batched forward and backward pass (``bmm``) for
        the ``m`` clients still training at each step.
    ``"vmap"``
        Any model whose client step is small (forward FLOPs of the largest
        minibatch below ``loop_min_flops``, e.g. the small CNN at B = 10):
        ``vmap(grad(loss))`` over the stacked parameters, all clients per step.
    ``"loop"``
        Any model whose client step is large (the CNN from B = 3 on, the small
        CNN from B = 30): client after client, all its steps on one worker
        module with plain autograd, its parameters copied in and out once per
        round. Each step is then one large, well-threaded computation; the
        grouped convolutions that ``vmap`` produces are slower on a CPU (the CNN
        at B = 10, one thread: 9.2 s a round against 5.9 s with a copy per step,
        and less with one copy per round; see bench/README.md).

    The local rule's correction is applied between computing a step's gradients
    and adding them, on the rows of the clients in the step (one fused operation
    per term and layer).
    """

    name = "vectorized"
    loop_min_flops = 50e6   # forward FLOPs of a client's step above which clients loop

    def __init__(self, model: nn.Module, train):
        self.train = train
        self.layout = FlatLayout(model)
        self.dtype = self.layout.dtype
        self.mlp = _is_plain_two_nn(model)
        self._stack: list[torch.Tensor] | None = None
        self._delta: torch.Tensor | None = None
        self.flops_per_sample = 0
        if not self.mlp:
            self._build_func(model)
            self.flops_per_sample = _forward_flops(self._worker, train)

    def path(self, schedule: Schedule) -> str:
        """How this schedule will be trained: ``"mlp"``, ``"vmap"`` or ``"loop"``."""
        if self.mlp:
            return "mlp"
        bmax = max(max(b) for b in schedule.batch_sizes)
        return "loop" if bmax * self.flops_per_sample >= self.loop_min_flops else "vmap"

    # -- stacked parameters and the update tensor (reused across rounds) ----------------------
    def _buffers(self, M: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        if self._stack is None or self._stack[0].shape[0] < M:
            self._stack = self._delta = None  # free the old buffers first
            self._stack = [torch.empty((M, *s), dtype=self.dtype) for s in self.layout.shapes]
            self._delta = torch.empty(M, self.layout.size, dtype=self.dtype)
        return [s[:M] for s in self._stack], self._delta[:M]

    # -- generic paths: torch.func -------------------------------------------------------
    def _build_func(self, model: nn.Module) -> None:
        from torch.func import functional_call, grad_and_value, vmap

        buffers = {n: b for n, b in model.named_buffers()}
        names = self.layout.names

        def weighted_loss(params, x, y, w):
            out = functional_call(model, ({n: p for n, p in zip(names, params)}, buffers), (x,))
            return (F.cross_entropy(out, y, reduction="none") * w).sum()

        self._vgrad = vmap(grad_and_value(weighted_loss))
        self._worker = copy.deepcopy(model).train()
        self._worker_params = list(self._worker.parameters())

    def _step_vmap(self, P, x, y, w, lr, correct):
        with torch.enable_grad():
            grads, loss = self._vgrad(tuple(P), x, y, w)
        correct()
        torch._foreach_add_(P, list(grads), alpha=-lr)
        return loss

    def _train_loop(self, P, schedule, xl, corr, lr, rule, loss_sum):
        # client after client on the worker module: its parameters copied in once and out
        # once per round (a copy per step cost 11% of the CNN's round at B = 10)
        from .sequential import sgd_steps
        for row in range(len(schedule)):
            Pi = [p[row] for p in P]
            torch._foreach_copy_(self._worker_params, Pi)
            c = None if corr is None else [cc[row] for cc in corr]
            losses = sgd_steps(self._worker, self._worker_params, self.train,
                               schedule.batches(row), lr=lr, rule=rule, x=xl, correction=c,
                               row=row)
            loss_sum[row] = float(torch.stack(losses).double().sum())
            torch._foreach_copy_(Pi, self._worker_params)

    # -- 2NN path: hand-written batched forward/backward ------------------------------
    @staticmethod
    def _step_mlp(P, x, y, w, lr, correct):
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
        correct()                                                    # all gradients known
        W3.baddbmm_(g3.transpose(1, 2), h2, alpha=-lr)
        b3.sub_(g3.sum(1), alpha=lr)
        W2.baddbmm_(dh2.transpose(1, 2), h1, alpha=-lr)
        b2.sub_(dh2.sum(1), alpha=lr)
        W1.baddbmm_(dh1.transpose(1, 2), x, alpha=-lr)
        b1.sub_(dh1.sum(1), alpha=lr)
        return loss

    # -- the round ------------------------------------------------------------------------
    @torch.no_grad()
    def train_clients(self, x: torch.Tensor, schedule: Schedule, *, lr: float,
                      rule: LocalRule = LocalRule(), start: torch.Tensor | None = None
                      ) -> ClientUpdates:
        M = len(schedule)
        P, delta = self._buffers(M)
        xl = self.layout.views(x)
        origin = [g.unsqueeze(0) for g in xl] if start is None else self.layout.views(start)
        for s, g in zip(P, origin):
            s.copy_(g.expand_as(s))
        images, labels = self.train.images, self.train.labels
        loss_sum = torch.zeros(M, dtype=torch.float64)
        step = self._step_mlp if self.mlp else self._step_vmap
        plain = not rule.has_correction
        transform = rule.transform
        corr = None if rule.correction is None else self.layout.views(rule.correction)

        def corrector(lo, hi):
            if plain:
                return lambda i=None: None

            def correct(i=None):
                a, b = (lo, hi) if i is None else (lo + i, lo + i + 1)
                rule.correct_([p[a:b] for p in P], xl,
                              None if corr is None else [c[a:b] for c in corr], lr)
            return correct

        if self.path(schedule) == "loop":
            self._train_loop(P, schedule, xl, corr, lr, rule, loss_sum)
        else:
            plan = _Plan(schedule, self.dtype)   # padded minibatches: only the stepwise paths
            for t, segments in enumerate(plan.segments):
                for lo, hi, b in segments:
                    Pm = [p[lo:hi] for p in P]
                    m = hi - lo
                    ix = plan.idx[lo:hi, t, :b]
                    flat_ix = ix.reshape(-1)
                    xb = images.index_select(0, flat_ix).view(m, b, *images.shape[1:])
                    yb = labels.index_select(0, flat_ix).view(m, b)
                    if transform is not None:
                        xb, yb = transform(slice(lo, hi), ix, xb, yb)
                    loss = step(Pm, xb, yb, plan.w[lo:hi, t, :b], lr, corrector(lo, hi))
                    loss_sum[lo:hi] += loss
        for p, g, d in zip(P, origin, self.layout.views(delta)):
            torch.sub(p, g, out=d)
        return ClientUpdates(clients=list(schedule.clients), delta=delta,
                             weight=schedule.weights.clone(), steps=schedule.steps.clone(),
                             loss=loss_sum / schedule.steps)
