"""Decision thresholds: chosen on the validation split, reported at fixed operating points.

A rule is text so it can live in a recipe and a bundle (its grammar:
:func:`medsight.config.check_rule`): ``youden`` (maximise sensitivity + specificity - 1),
``sensitivity>=0.95`` (the highest threshold that keeps at least that sensitivity),
``specificity>=0.9`` (the lowest that keeps at least that specificity), or a number (``0.5``:
fixed).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_curve

from medsight.config import THRESHOLD_TARGET, check_rule

OPERATING_POINTS = (0.90, 0.95)


def choose_threshold(is_positive: np.ndarray, score: np.ndarray, rule: str) -> tuple[float, str]:
    """The threshold on ``score`` that ``rule`` picks on these labels, and how it was chosen.

    Without both classes no data-driven choice exists: 0.5 is kept and the reason returned.
    """
    rule = check_rule(rule)
    is_positive = np.asarray(is_positive, dtype=bool)
    if rule != "youden" and not THRESHOLD_TARGET.match(rule):
        return float(rule), f"fixed {float(rule):g}"
    if is_positive.all() or not is_positive.any():
        return 0.5, f"fixed 0.5 ({rule} needs both classes in the validation split)"
    fpr, tpr, thresholds = roc_curve(is_positive, score)
    thresholds = np.minimum(thresholds, 1.0)  # sklearn's first threshold is +inf
    if rule == "youden":
        best = int(np.argmax(tpr - fpr))
        return float(thresholds[best]), "youden"
    which, target = THRESHOLD_TARGET.match(rule).group(1, 2)
    target = float(target)
    if which == "sensitivity":
        best = int(np.argmax(tpr >= target - 1e-12))  # first (highest) threshold reaching it
    else:
        ok = np.nonzero(1 - fpr >= target - 1e-12)[0]
        best = int(ok[-1])  # last (lowest) threshold still keeping the specificity
    return float(thresholds[best]), rule


def operating_points(is_positive: np.ndarray, score: np.ndarray) -> dict[str, float | None]:
    """Sensitivity at 90 % and 95 % specificity, and specificity at 90 % and 95 % sensitivity
    (the best the ranking allows at that point; independent of the stored threshold)."""
    is_positive = np.asarray(is_positive, dtype=bool)
    keys = [f"sensitivity_at_specificity_{p:.2f}" for p in OPERATING_POINTS] + [
        f"specificity_at_sensitivity_{p:.2f}" for p in OPERATING_POINTS
    ]
    if is_positive.all() or not is_positive.any():
        return dict.fromkeys(keys)
    fpr, tpr, _ = roc_curve(is_positive, score)
    out: dict[str, float | None] = {}
    for p in OPERATING_POINTS:
        out[f"sensitivity_at_specificity_{p:.2f}"] = float(tpr[1 - fpr >= p - 1e-12].max())
    for p in OPERATING_POINTS:
        out[f"specificity_at_sensitivity_{p:.2f}"] = float((1 - fpr[tpr >= p - 1e-12]).max())
    return out
