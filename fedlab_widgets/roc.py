"""ROC curves and their area, for attacks that score examples (label leakage, membership inference).

Examples
--------
>>> roc_auc([0.9, 0.8, 0.1, 0.3], [1, 1, 0, 0])
1.0
>>> fpr, tpr = roc_curve([0.9, 0.1, 0.5], [1, 0, 0])
>>> fpr.tolist(), tpr.tolist()
([0.0, 0.0, 0.5, 1.0], [0.0, 1.0, 1.0, 1.0])
"""

from __future__ import annotations

import numpy as np

__all__ = ["roc_auc", "roc_curve", "binary_labels"]


def binary_labels(labels) -> np.ndarray:
    y = np.asarray(labels).astype(int).ravel()
    if not set(np.unique(y)) <= {0, 1}:
        raise ValueError("labels must be 0 or 1")
    if y.min() == y.max():
        raise ValueError("labels must hold both classes (a positive and a negative) for an AUC")
    return y


def roc_auc(scores, labels) -> float:
    """The area under the ROC curve: P(a positive's score > a negative's), ties counting half.

    The Mann-Whitney statistic from average ranks, exact and O(n log n).
    """
    s = np.asarray(scores, dtype=float).ravel()
    y = binary_labels(labels)
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    # average ranks (1-based) over ties
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    pos = y == 1
    n1, n0 = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def roc_curve(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates at every threshold, from (0, 0) to (1, 1)."""
    s = np.asarray(scores, dtype=float).ravel()
    y = binary_labels(labels)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]   # the last index of each distinct score
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    return np.r_[0.0, fp / fp[-1]], np.r_[0.0, tp / tp[-1]]
