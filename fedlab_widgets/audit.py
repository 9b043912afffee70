"""Privacy you can measure: membership inference against a model, and the epsilon it proves.

A differentially private training run promises that no test can tell whether an example
(or, for DP-FedAvg, a whole client) took part much better than chance: for every test,
``TPR <= e^eps FPR + delta`` and ``1 - FPR <= e^eps (1 - TPR) + delta``. **Auditing** runs a
test, a membership inference attack, and turns its measured (TPR, FPR) into a lower bound
on epsilon (Jagielski, Ullman & Oprea 2020; Nasr et al. 2021). The bound uses Clopper-Pearson
intervals (scipy's beta quantiles), so it holds with the stated confidence whatever the
number of trials; it must never exceed the accountant's epsilon (an upper bound): if it
did, one of the two would be wrong.

Attacks:

* ``"loss"`` (Yeom et al. 2018): members have lower loss; the score is ``-loss``.
* ``"calibrated"`` (difficulty calibration, Watson et al. 2022): an example is judged by how
  much lower its loss is under the target than under a **reference** model trained without
  it; the score is ``loss_reference - loss_target``, which discounts examples that are simply easy.

At **client level** (was this client in the federation?) a client's score is the mean score
of its examples.

**Canary clients** audit the mechanism itself (Andrew et al., "One-shot empirical privacy
estimation for federated learning", ICLR 2024): some clients send, instead of their update, a
fixed random direction of norm ``clip_norm`` (:class:`CanaryClients`, a client step); the
auditor scores each canary by the cosine between its direction and the model's total change
(:func:`canary_audit`), against directions that were never sent. Under DP-FedAvg a canary is
hidden by the noise and nothing else, so this audit comes much closer to the accountant than an
attack on the data does.

Examples
--------
>>> round(epsilon_point(tpr=0.5, fpr=0.1, delta=0.0), 4)     # log(0.5 / 0.1)
1.6094
>>> lo = epsilon_lower_bound(tpr=0.5, fpr=0.1, delta=0.0, n=1000)
>>> 0 < lo < 1.6094
True
>>> epsilon_lower_bound(tpr=0.5, fpr=0.5, delta=1e-5, n=1000)  # a guess proves nothing
0.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .params import Param, check_params
from .roc import roc_auc, roc_curve
from .seeds import generator


__all__ = ["membership_inference", "MembershipResult", "epsilon_lower_bound", "epsilon_point",
           "example_losses", "ATTACKS", "CanaryClients", "canary_audit", "with_canaries"]

#: the membership inference attacks :func:`membership_inference` knows
ATTACKS = ("loss", "calibrated")


def _eps(tpr: float, fpr: float, delta: float) -> float:
    best = 0.0
    for num, den in ((tpr - delta, fpr), (1 - fpr - delta, 1 - tpr)):
        if num > 0:
            best = max(best, math.inf if den <= 0 else math.log(num / den))
    return best


def _check_rates(tpr, fpr, delta):
    table = (Param("tpr", 0.5, lo=0.0, hi=1.0), Param("fpr", 0.5, lo=0.0, hi=1.0),
             Param("delta", 1e-5, lo=0.0, hi=1.0, hi_open=True))
    return check_params("epsilon_lower_bound", table, {"tpr": tpr, "fpr": fpr, "delta": delta}).values()


def epsilon_point(*, tpr: float, fpr: float, delta: float) -> float:
    """The epsilon a test with exactly these rates proves (no sampling error): the largest of
    ``log((TPR - delta) / FPR)`` and ``log((1 - FPR - delta) / (1 - TPR))``, at least 0."""
    return _eps(*_check_rates(tpr, fpr, delta))


def epsilon_lower_bound(*, tpr: float, fpr: float, delta: float, n, confidence: float = 0.95) -> float:
    """A lower bound on epsilon that holds with probability ``confidence``.

    Parameters
    ----------
    tpr, fpr : float
        The attack's measured true and false positive rates.
    delta : float
        The guarantee's delta, in [0, 1).
    n : int or (int, int)
        Trials behind the rates: members and non-members (one number: as many of each).
    confidence : float, default 0.95
        Clopper-Pearson: TPR at its lower bound and FPR at its upper bound, each at
        ``(1 - confidence) / 2``; the result is never above :func:`epsilon_point`.
    """
    from scipy.stats import beta

    tpr, fpr, delta = _check_rates(tpr, fpr, delta)
    n_pos, n_neg = (n, n) if np.isscalar(n) else n
    for name, v in (("n", n_pos), ("n", n_neg)):
        if int(v) != v or v < 1:
            raise ValueError(f"{name} must be a positive integer (or a pair of them); got {v}")
    confidence = check_params("epsilon_lower_bound", (Param("confidence", 0.95, lo=0.0, lo_open=True,
                                                            hi=1.0, hi_open=True),),
                              {"confidence": confidence})["confidence"]
    a = (1 - confidence) / 2
    tp, fp = round(tpr * n_pos), round(fpr * n_neg)
    tpr_lo = 0.0 if tp == 0 else float(beta.ppf(a, tp, n_pos - tp + 1))
    fpr_hi = 1.0 if fp == n_neg else float(beta.ppf(1 - a, fp + 1, n_neg - fp))
    return _eps(tpr_lo, fpr_hi, delta)


@dataclass
class MembershipResult:
    """A membership inference attack's scores (higher: more likely a member) and how well they separate."""

    auc: float
    fpr: np.ndarray
    tpr: np.ndarray
    scores: np.ndarray
    members: np.ndarray        # 1 for a member, 0 for a non-member, per score
    level: str = "example"

    def tpr_at(self, fpr: float) -> float:
        """The true positive rate at false positive rate ``fpr`` (0.001, 0.01: the low-FPR regime)."""
        return float(self.tpr[np.searchsorted(self.fpr, fpr, side="right") - 1])

    def epsilon_lower_bound(self, *, delta: float, confidence: float = 0.95, seed: int = 0) -> float:
        """The epsilon this attack proves, honestly: the threshold is chosen on a random half of the
        scores (the one whose bound is largest there), the bound computed on the other half."""
        rng = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(self.scores), generator=rng).numpy()
        pick, test = order[: len(order) // 2], order[len(order) // 2:]
        m = self.members[pick]
        n_pick = (max(1, int(m.sum())), max(1, int((1 - m).sum())))
        best_t, best = None, -1.0
        for t in np.quantile(self.scores[pick], np.linspace(0, 1, 201)):
            e = epsilon_lower_bound(**_rates(self.scores[pick], m, t), delta=delta, n=n_pick,
                                    confidence=confidence)
            if e > best:
                best_t, best = t, e
        r = _rates(self.scores[test], self.members[test], best_t)
        n = (int(self.members[test].sum()), int((1 - self.members[test]).sum()))
        return epsilon_lower_bound(**r, delta=delta, n=n, confidence=confidence)


def _rates(scores, members, t) -> dict:
    guess = scores >= t
    m = members == 1
    return {"tpr": float(guess[m].mean()), "fpr": float(guess[~m].mean())}


@torch.no_grad()
def example_losses(model: nn.Module, dataset, indices=None, *, batch_size: int = 2000) -> torch.Tensor:
    """The model's cross-entropy on every example (``indices`` of ``dataset``, default all)."""
    ix = torch.arange(len(dataset)) if indices is None else torch.as_tensor(indices, dtype=torch.int64)
    dtype = next(model.parameters()).dtype
    out = [nn.functional.cross_entropy(model(dataset.images[b].to(dtype)), dataset.labels[b], reduction="none")
           for b in ix.split(batch_size)]
    return torch.cat(out).double()


def membership_inference(target, members, nonmembers, *, dataset=None, attack: str = "loss",
                         reference: nn.Module | None = None, level: str = "example") -> MembershipResult:
    """Attack ``target``: tell ``members`` (trained on) from ``nonmembers`` (not).

    Parameters
    ----------
    target : Simulation or nn.Module
        The model attacked (a Simulation's global model).
    members, nonmembers : index tensor, or list of index tensors
        Example level: sample indices into ``dataset``. Client level: one index tensor per client.
    dataset : FederatedDataset, optional
        Where the indices point (default: the Simulation's training set).
    attack : {"loss", "calibrated"}
    reference : nn.Module, optional
        ``"calibrated"``: a model of the same task trained without any of these examples.
    level : {"example", "client"}

    Examples
    --------
    >>> from fedlab_widgets import get_model, load_mnist
    >>> train, _ = load_mnist()
    >>> untrained = get_model("logreg", seed=0)
    >>> r = membership_inference(untrained, torch.arange(500), torch.arange(500, 1000), dataset=train)
    >>> 0.4 < r.auc < 0.6          # a model trained on nothing knows no member
    True
    """
    if attack not in ATTACKS:
        raise ValueError(f"attack must be one of {', '.join(ATTACKS)}; got {attack!r}")
    if level not in ("example", "client"):
        raise ValueError(f"level must be one of example, client; got {level!r}")
    if attack == "calibrated" and reference is None:
        raise ValueError("reference: the calibrated attack needs a reference model trained without "
                         "these examples (pass reference=...)")
    model = getattr(target, "global_model", target)
    dataset = dataset if dataset is not None else getattr(target, "train", None)
    if dataset is None:
        raise ValueError("dataset: pass the dataset the indices point into")

    def score(ix):
        s = -example_losses(model, dataset, ix)
        if reference is not None and attack == "calibrated":
            s = s + example_losses(reference, dataset, ix)
        return s

    groups = []
    for label, given in ((1, members), (0, nonmembers)):
        if level == "client":
            if not len(given):
                raise ValueError(f"{'members' if label else 'nonmembers'}: give at least one client")
            groups.append((label, torch.stack([score(ix).mean() for ix in given])))
        else:
            ix = torch.as_tensor(given, dtype=torch.int64)
            if not len(ix):
                raise ValueError(f"{'members' if label else 'nonmembers'}: give at least one example")
            groups.append((label, score(ix)))
    scores = torch.cat([g for _, g in groups]).numpy()
    labels = np.concatenate([np.full(len(g), lab) for lab, g in groups])
    fpr, tpr = roc_curve(scores, labels)
    return MembershipResult(roc_auc(scores, labels), fpr, tpr, scores, labels, level)


class CanaryClients:
    """A client step: the updates of ``clients`` replaced by fixed random directions of L2 norm
    ``norm`` (take the DP clip norm: clipping leaves them whole). Pass it as
    ``algorithms.get(..., client_steps=[canaries])``; the directions depend on the client id and
    ``seed`` only, so the auditor knows them and can draw ones never sent.

    Examples
    --------
    >>> c = CanaryClients([3, 4], norm=0.5, seed=1)
    >>> u = c.direction(3, 10)
    >>> round(float(u.norm()), 6), bool((c.direction(3, 10) == u).all())
    (1.0, True)
    """

    def __init__(self, clients, *, norm: float, seed: int = 0):
        self.clients = frozenset(int(k) for k in clients)
        if not self.clients:
            raise ValueError("clients: give at least one canary client")
        self.norm = check_params("CanaryClients", (Param("norm", 1.0, lo=0.0, lo_open=True),),
                                 {"norm": norm})["norm"]
        self.seed = seed
        self._cache: dict[tuple[int, int], torch.Tensor] = {}   # drawn once: (client, dim) -> u

    def direction(self, client: int, dim: int, dtype=torch.float64) -> torch.Tensor:
        """Canary ``client``'s unit direction in ``dim`` dimensions."""
        key = (int(client), int(dim))
        if key not in self._cache:
            u = torch.randn(dim, generator=generator(self.seed, 12, int(client)), dtype=torch.float64)
            self._cache[key] = u / u.norm()
        return self._cache[key].to(dtype)

    def __call__(self, updates, ctx):
        rows = [i for i, k in enumerate(updates.clients) if int(k) in self.clients]
        if not rows:
            return updates
        d = updates.delta.clone()
        for i in rows:
            d[i] = self.norm * self.direction(updates.clients[i], d.shape[1], d.dtype)
        return updates.replace(delta=d)


def with_canaries(partition, labels, count: int, *, first: int):
    """``partition`` with ``count`` canary clients appended (ids ``num_clients`` on), each holding
    the one sample ``first + j`` of ``labels``' dataset: it trains on it, and its canary step then
    replaces its update. ``labels``: the whole dataset's (the canaries' samples included)."""
    import dataclasses
    extra = [torch.tensor([first + j]) for j in range(int(count))]
    return dataclasses.replace(partition, labels=labels, client_indices=list(partition.client_indices) + extra)


def canary_audit(sim, canaries: CanaryClients, start: torch.Tensor, *,
                 held_out: int | None = None) -> MembershipResult:
    """Score every canary by ``cos(x_final - start, direction)``: the inserted canaries against
    ``held_out`` directions never sent (default as many), at client level.

    ``start``: the global model's flat parameters before training (``sim.layout.flatten``).
    """
    x = torch.cat([p.detach().flatten().double() for p in sim.global_model.parameters()])
    change = x - start.double()
    if float(change.norm()) == 0:
        raise ValueError("start: the model has not moved from it; run the federation first")
    inserted = sorted(canaries.clients)
    n_out = len(inserted) if held_out is None else int(held_out)
    others = range(sim.num_clients, sim.num_clients + n_out)
    cos = [float(change @ canaries.direction(k, len(change)) / change.norm())
           for k in [*inserted, *others]]
    scores = np.array(cos)
    labels = np.r_[np.ones(len(inserted)), np.zeros(n_out)].astype(int)
    fpr, tpr = roc_curve(scores, labels)
    return MembershipResult(roc_auc(scores, labels), fpr, tpr, scores, labels, "client")
