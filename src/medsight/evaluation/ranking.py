"""The figures the bootstrap recomputes on every resample, in plain numpy.

A 95 % interval takes 1,000 resamples, each scoring every figure again. scikit-learn's metric
functions check and re-encode their inputs on every call, which costs about a millisecond each:
twenty times the arithmetic, and 20-80 s per evaluation. These give scikit-learn's values (the
tests hold them to it within 1e-12, ties and empty classes included) from one sort or one
``bincount``.
"""

from __future__ import annotations

import numpy as np


def roc_auc(is_positive: np.ndarray, score: np.ndarray) -> float | None:
    """Binary ROC-AUC as the Mann-Whitney statistic: the chance that a positive outscores a
    negative, a tie counting half (the area under scikit-learn's ROC curve); None without both
    classes."""
    is_positive = np.asarray(is_positive, dtype=bool)
    positives = int(is_positive.sum())
    negatives = len(is_positive) - positives
    if not positives or not negatives:
        return None
    ranked = np.sort(score)
    mine = np.asarray(score)[is_positive]
    # each positive's rank among all scores, 1-based, tied scores sharing their mean rank
    ranks = np.searchsorted(ranked, mine, "left") + np.searchsorted(ranked, mine, "right") + 1
    above = ranks.sum() / 2 - positives * (positives + 1) / 2
    return float(above / (positives * negatives))


def average_precision(is_positive: np.ndarray, score: np.ndarray) -> float | None:
    """PR-AUC as scikit-learn's average precision: precision at each distinct score, weighted
    by the recall gained there; None without a positive."""
    is_positive = np.asarray(is_positive, dtype=bool)
    if not is_positive.any():
        return None
    score = np.asarray(score)
    order = np.argsort(-score)  # ties in any order: only the end of each run is read
    ranked = score[order]
    # the last image of each run of equal scores: a threshold takes all of them or none
    last = np.append(np.flatnonzero(np.diff(ranked)), len(ranked) - 1)
    true_positives = np.cumsum(is_positive[order])[last]
    precision = true_positives / (last + 1)
    recall = true_positives / true_positives[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def confusion(y_true: np.ndarray, y_pred: np.ndarray, classes: int) -> np.ndarray:
    """The (classes, classes) confusion matrix, rows true, columns predicted."""
    cells = np.asarray(y_true, dtype=np.int64) * classes + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(cells, minlength=classes * classes).reshape(classes, classes)


def mcc(matrix: np.ndarray) -> float:
    """Matthews' correlation of a confusion matrix (Gorodkin's multi-class form, as
    scikit-learn): 0 when either the truth or the decisions hold one class only."""
    matrix = np.asarray(matrix, dtype=np.float64)
    truth, said = matrix.sum(axis=1), matrix.sum(axis=0)
    n = matrix.sum()
    covariance = np.trace(matrix) * n - truth @ said
    spread = (n * n - said @ said) * (n * n - truth @ truth)
    return float(covariance / np.sqrt(spread)) if spread else 0.0


def class_rates(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Per class, one-vs-rest: recall, precision and F1, 0 where undefined (scikit-learn's
    ``zero_division=0``)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    hits = np.diag(matrix)
    truth, said = matrix.sum(axis=1), matrix.sum(axis=0)
    return {
        "recall": _share(hits, truth),
        "precision": _share(hits, said),
        "f1": _share(2 * hits, truth + said),
    }


def _share(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)
