"""Calibration: does a predicted 80 % mean right 80 % of the time?

Temperature scaling (Guo et al. 2017) divides the logits by one number fitted on the validation
split; it changes how confident the model is, never which image ranks above which. ECE is the
usual equal-width-bin estimate on the top-label confidence.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

ECE_BINS = 15


def reliability_bins(
    y_true: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS
) -> list[dict[str, float]]:
    """Per confidence bin: mean confidence, accuracy and image count (empty bins left out)."""
    confidence, correct, which = _binned(y_true, probs, bins)
    rows = []
    for b in range(bins):
        mask = which == b
        if mask.any():
            rows.append(
                {
                    "low": b / bins,
                    "high": (b + 1) / bins,
                    "confidence": float(confidence[mask].mean()),
                    "accuracy": float(correct[mask].mean()),
                    "count": int(mask.sum()),
                }
            )
    return rows


def expected_calibration_error(
    y_true: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS
) -> float:
    """Weighted mean gap between confidence and accuracy over the bins."""
    n = len(y_true)
    if n == 0:
        return 0.0
    confidence, correct, which = _binned(y_true, probs, bins)
    gaps = np.bincount(which, weights=correct - confidence, minlength=bins)
    return float(np.abs(gaps).sum() / n)


def _binned(
    y_true: np.ndarray, probs: np.ndarray, bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each image's top-label confidence, whether that label is right, and its bin."""
    confidence = np.asarray(probs).max(axis=1)
    correct = (np.asarray(probs).argmax(axis=1) == np.asarray(y_true)).astype(np.float64)
    # bins are (lo, hi]; a confidence of exactly 1/k (a tie) falls in the first one
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    return confidence, correct, which


def negative_log_likelihood(logits: np.ndarray, y_true: np.ndarray, temperature: float) -> float:
    logp = log_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)
    return float(-logp[np.arange(len(y_true)), np.asarray(y_true)].mean())


def fit_temperature(logits: np.ndarray, y_true: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood of ``y_true`` (1.0 when there
    is nothing to fit: no images or a single class, where any T > 0 fits 'perfectly')."""
    y_true = np.asarray(y_true)
    if len(y_true) == 0 or len(np.unique(y_true)) < 2:
        return 1.0
    found = minimize_scalar(
        lambda log_t: negative_log_likelihood(logits, y_true, float(np.exp(log_t))),
        bounds=(np.log(0.05), np.log(20.0)),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(found.x))
