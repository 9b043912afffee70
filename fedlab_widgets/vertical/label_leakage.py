"""What the gradients a label holder sends give away: the labels (Li et al., ICLR 2022).

In two-party split learning the party without labels receives, for every example of a
batch, the gradient of the loss with respect to the activations it sent. On a binary task
whose positives are rare (digit 0 against the rest here; clicks among impressions in the
paper) the model soon predicts "negative" for everything, so a positive example's loss, and
its gradient, is large: **the norm attack** ranks the examples by gradient norm, and its leak
AUC is the probability that a random positive outranks a random negative. **The direction
attack** needs one known positive: an example whose gradient points its way (cosine > 0) has
its label.

The paper's defences perturb the gradients before they are sent:

* ``"iso"``: isotropic Gaussian noise of standard deviation ``noise * max_norm / sqrt(d)``
  per entry, ``max_norm`` the batch's largest gradient norm (the paper's baseline);
* ``"max_norm"``: the paper's heuristic, ``g_j * (1 + sigma_j * xi_j)`` with one standard
  normal ``xi_j`` per example and ``sigma_j = sqrt(max_norm^2 / ||g_j||^2 - 1)``, so that every
  gradient's expected squared norm is the batch's largest (``noise`` scales ``sigma_j``).

Examples
--------
>>> roc_auc(np.array([0.9, 0.8, 0.1, 0.3]), np.array([1, 1, 0, 0]))
1.0
>>> roc_auc(np.array([0.5, 0.5]), np.array([1, 0]))
0.5
>>> g = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
>>> norm_attack(g, np.array([1, 0])).auc
1.0
>>> p = perturb(g, "max_norm", generator=torch.Generator().manual_seed(0))
>>> p.shape, bool(torch.equal(p[0], g[0]))   # the largest gradient is left as it is
(torch.Size([2, 2]), True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..roc import binary_labels
from ..roc import roc_auc, roc_curve

__all__ = ["roc_auc", "roc_curve", "LeakResult", "norm_attack", "direction_attack",
           "perturb", "DEFENCES"]

#: the defences :func:`perturb` knows
DEFENCES = ("none", "iso", "max_norm")


@dataclass
class LeakResult:
    """An attack's scores and how well they rank the positives first."""

    auc: float
    fpr: np.ndarray
    tpr: np.ndarray
    scores: np.ndarray

    def tpr_at(self, fpr: float) -> float:
        """The true positive rate at false positive rate ``fpr`` (the ROC curve's step there)."""
        return float(self.tpr[np.searchsorted(self.fpr, fpr, side="right") - 1])


def _result(scores, labels) -> LeakResult:
    fpr, tpr = roc_curve(scores, labels)
    return LeakResult(roc_auc(scores, labels), fpr, tpr, np.asarray(scores, dtype=float))


def norm_attack(gradients: torch.Tensor, labels) -> LeakResult:
    """Score each example by the norm of its gradient (``[N, d]``): large means positive."""
    g = gradients.reshape(len(gradients), -1).double()
    return _result(g.norm(dim=1).numpy(), labels)


def direction_attack(gradients: torch.Tensor, labels, *, known: int | None = None) -> LeakResult:
    """Score each example by its gradient's cosine with a known positive's.

    ``known``: the index of the positive example the attacker knows (default: the first).
    """
    y = binary_labels(labels)
    known = int(np.flatnonzero(y == 1)[0]) if known is None else int(known)
    if y[known] != 1:
        raise ValueError(f"known must be the index of a positive example; example {known} is negative")
    g = gradients.reshape(len(gradients), -1).double()
    cos = torch.nn.functional.cosine_similarity(g, g[known:known + 1], dim=1).numpy()
    return _result(cos, y)


def perturb(gradients: torch.Tensor, defence: str = "none", *, noise: float = 1.0,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """A batch of per-example gradients (``[N, d]``) perturbed by a defence of Li et al.

    Parameters
    ----------
    defence : {"none", "iso", "max_norm"}
    noise : float, default 1.0
        ``"iso"``: the noise's scale relative to the batch's largest norm; ``"max_norm"``: a
        factor on every ``sigma_j`` (1 is the paper's).
    generator : torch.Generator, optional
        Where the noise is drawn from (seed it for the same noise every run).
    """
    if defence not in DEFENCES:
        raise ValueError(f"defence must be one of {', '.join(DEFENCES)}; got {defence!r}")
    if not (noise >= 0 and math.isfinite(noise)):
        raise ValueError(f"noise must be a number >= 0; got {noise}")
    if defence == "none" or noise == 0:
        return gradients
    g = gradients.reshape(len(gradients), -1)
    norms = g.norm(dim=1, keepdim=True)
    top = norms.max()
    if defence == "iso":
        std = noise * top / math.sqrt(g.shape[1])
        out = g + std * torch.randn(g.shape, generator=generator, dtype=g.dtype)
    else:
        sigma = torch.sqrt(torch.clamp(top ** 2 / (norms ** 2 + 1e-32) - 1.0, min=0.0))
        out = g * (1 + noise * sigma * torch.randn(norms.shape, generator=generator, dtype=g.dtype))
    return out.reshape(gradients.shape)
