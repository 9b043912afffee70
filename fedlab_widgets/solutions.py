"""Reference solutions to the notebooks' exercises.

An exercise cell ships blank (``my_answer = None``); its check cell runs the
learner's answer when there is one and this module's solution otherwise
(``my_answer or solutions.x``), so that the notebook still runs top to bottom and
CI checks the real solution. The notebook shows the same solution in a collapsed
block. Read it only after trying.
"""

from __future__ import annotations

import torch

__all__ = ["answer", "report", "ANSWERS", "epsilon_from_rates", "qffl_weights", "server_momentum_step", "coordinate_median", "label_from_gradient", "clip_to_half",
           "pairwise_mask", "topk_with_error_feedback", "worst_decile", "suspect", "bytes_sent"]


# -- 06-client-drift-remedies ------------------------------------------------------------------
def server_momentum_step(delta: torch.Tensor, ctx) -> torch.Tensor:
    """Exercise 06.1: heavy-ball server momentum with beta = 0.9 (FedAvgM at server lr 1)."""
    v = ctx.state.get("velocity")
    v = delta.clone() if v is None else 0.9 * v + delta
    ctx.state["velocity"] = v
    return v


# -- 10-attacks-and-defenses -------------------------------------------------------------------
def coordinate_median(updates) -> torch.Tensor:
    """Exercise 10.1: the coordinate-wise median of the updates (mean of the middle two if even)."""
    s = updates.delta.sort(dim=0).values
    m = len(s)
    return s[m // 2] if m % 2 else (s[m // 2 - 1] + s[m // 2]) / 2


# -- 07-what-gradients-leak --------------------------------------------------------------------
def label_from_gradient(grads) -> int:
    """Exercise 07.1: the label is the row of the last weight gradient with a negative sum."""
    last_weight = grads[-2]               # [classes, features]; grads[-1] is its bias
    return int(last_weight.sum(dim=1).argmin())


# -- 08-differential-privacy ---------------------------------------------------------------------
def clip_to_half(updates, ctx=None):
    """Exercise 08.1: scale every client's update to L2 norm at most 0.5."""
    norms = updates.delta.norm(dim=1, keepdim=True)
    return updates.replace(delta=updates.delta * (0.5 / norms).clamp(max=1.0))


# -- 09-secure-aggregation -----------------------------------------------------------------------
def pairwise_mask(x_u: torch.Tensor, x_v: torch.Tensor, seed: int):
    """Exercise 09.1: two clients' masked vectors (int64 mod 2**32) whose sum is unchanged."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.randint(0, 2 ** 32, x_u.shape, generator=g, dtype=torch.int64)
    return (x_u + mask) % 2 ** 32, (x_v - mask) % 2 ** 32


# -- answers to the exercises of notebooks 00-05 (values, checked by the notebooks' check cells) --
ANSWERS = {
    "00.1": 2,                      # round(0.2 * 10) clients
    "01.1": 31.9,                   # 2 directions x 20 clients x 199,210 parameters x 4 bytes
    "01.2": 3,                      # rounds of the CNN within the 2NN's 30 rounds of bytes
    "02.1": 3,                      # shards can straddle a digit boundary
    "02.2": 0.1,                    # an alpha giving fewer than 3 effective classes
    "02b.1": 250,                   # the training set's high-school students
    "02b.2": "employees",           # a model learns the handwriting it is shown
    "03.1": "a",                    # more sequential steps per client beat more clients
    "03.2": 10.0,                   # an lr that diverges
    "04.1": 60,                     # u = 5 * 600 / 50
    "04.2": (5, 10),                # the most local work needed the fewest megabytes
    "05.1": "dirichlet alpha=0.1",  # the widest spread of client accuracies
    "05.2": "higher",               # fewer local steps, less drift
}


def answer(exercise: str, mine):
    """``mine`` if the learner has answered (not None), else the reference answer.

    Says which one the check is about to use, without giving the reference away: a
    learner who runs everything before answering sees no answer they have not tried.
    """
    if mine is not None:
        return mine
    print("(No answer yet: the check ran on the reference answer, which stays hidden. "
          "Fill in the cell above, then run this cell again.)")
    return ANSWERS[exercise]


def report(answered: bool, *lines) -> None:
    """Print a check's verdict, only for an answer the learner gave (the reference's would
    give it away)."""
    if answered:
        print(*lines)


# -- 11-dropouts-stragglers-compression --------------------------------------------------------
def topk_with_error_feedback(delta: torch.Tensor, residual: torch.Tensor, k: int):
    """Exercise 11.1: send the k largest entries of delta + residual; keep the rest for next time."""
    v = delta + residual
    idx = v.abs().topk(k).indices
    sent = torch.zeros_like(v)
    sent[idx] = v[idx]
    return sent, v - sent


# -- 09b-vertical-fl-and-split-learning ---------------------------------------------------------
def leak_auc(norms, labels) -> float:
    """Exercise 09b.1: the norm attack's AUC, the share of (positive, negative) pairs in which the
    positive's gradient norm is the larger (a tie counting half)."""
    import numpy as np
    norms, labels = np.asarray(norms, dtype=float), np.asarray(labels)
    pos, neg = norms[labels == 1], norms[labels == 0]
    return float(((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean())


ANSWERS["09b.1"] = leak_auc


# -- 08b-measuring-privacy -----------------------------------------------------------------------
def epsilon_from_rates(tpr: float, fpr: float, delta: float) -> float:
    """Exercise 08b.1: the epsilon a test with these exact rates proves (0 if none)."""
    import math
    best = 0.0
    for num, den in ((tpr - delta, fpr), (1 - fpr - delta, 1 - tpr)):
        if num > 0:
            best = max(best, math.inf if den <= 0 else math.log(num / den))
    return best


ANSWERS["08b.1"] = epsilon_from_rates


# -- 11b-time-and-asynchrony ----------------------------------------------------------------------
def round_seconds(times, deadline=None) -> float:
    """Exercise 11b.1: a synchronous round's simulated duration: the slowest client's time, or
    the deadline when some client would miss it."""
    slowest = max(times)
    return float(slowest if deadline is None or slowest <= deadline else deadline)


ANSWERS["11b.1"] = round_seconds


# -- 12-personalisation ------------------------------------------------------------------------
def worst_decile(acc) -> float:
    """Exercise 12.1: the mean accuracy of the worst 10% of clients (at least one; NaNs ignored)."""
    import math

    import numpy as np
    a = np.sort(np.asarray(acc, dtype=float)[np.isfinite(np.asarray(acc, dtype=float))])
    return float(a[:max(1, math.ceil(0.1 * len(a)))].mean())


# -- 12b-fairness-and-clusters -----------------------------------------------------------------
def qffl_weights(losses, sizes, q: float):
    """Exercise 12b.1: each client's share of q-FFL's aggregate, n_k (F_k + 1e-10)^q normalised."""
    import numpy as np
    w = np.asarray(sizes, dtype=float) * (np.asarray(losses, dtype=float) + 1e-10) ** q
    return w / w.sum()


ANSWERS["12b.1"] = qffl_weights


# -- 14-classroom-instructor / 14b-classroom-learner ----------------------------------------------
def suspect(record) -> int:
    """Exercise 14.1: the seat whose update was far larger than the room's (the median norm's)."""
    norm = {int(k): v for k, v in record["norm"].items()}
    return max(norm, key=norm.get)


ANSWERS["14.1"] = suspect


def bytes_sent(num_parameters: int, rounds: int) -> int:
    """Exercise 14b.1: a float32 model per round taken part in: 4 bytes per parameter."""
    return 4 * num_parameters * rounds


ANSWERS["14b.1"] = bytes_sent
