"""Classification metrics from scikit-learn, with the disease class as the positive class.

Degenerate inputs (one class only, no images) give ``None`` with a reason in ``notes`` instead
of a crash or an unexplained NaN.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn import metrics as skm


def decide(probs: np.ndarray, positive_index: int | None, threshold: float) -> np.ndarray:
    """Predicted class per row: the positive class when its probability reaches the threshold
    (binary tasks), else the most probable class."""
    if positive_index is None or probs.shape[1] != 2:
        return probs.argmax(axis=1)
    negative_index = 1 - positive_index
    return np.where(probs[:, positive_index] >= threshold, positive_index, negative_index)


def classification_metrics(
    y_true: np.ndarray,
    probs: np.ndarray,
    class_names: list[str],
    positive_index: int | None,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Accuracy, sensitivity, specificity, ROC-AUC and friends for one set of predictions."""
    y_true = np.asarray(y_true, dtype=np.int64)
    n_classes = len(class_names)
    result: dict[str, Any] = {"n": int(len(y_true)), "notes": []}
    if not len(y_true):
        result["notes"].append("no images: nothing to evaluate")
        return result
    y_pred = decide(probs, positive_index, threshold)
    labels = list(range(n_classes))
    result["accuracy"] = float(skm.accuracy_score(y_true, y_pred))
    result["balanced_accuracy"] = float(
        np.mean([(y_pred[y_true == c] == c).mean() for c in labels if (y_true == c).any()])
    )
    result["confusion_matrix"] = skm.confusion_matrix(y_true, y_pred, labels=labels).tolist()
    result["class_names"] = list(class_names)
    result["counts"] = {name: int((y_true == i).sum()) for i, name in enumerate(class_names)}
    present = np.unique(y_true)
    if positive_index is not None and n_classes == 2:
        pos = positive_index
        is_pos, said_pos = y_true == pos, y_pred == pos
        result.update(positive_class=class_names[pos], threshold=threshold)
        result["sensitivity"] = _ratio(
            (is_pos & said_pos).sum(), is_pos.sum(), "sensitivity", "no positive images", result
        )
        result["specificity"] = _ratio(
            (~is_pos & ~said_pos).sum(),
            (~is_pos).sum(),
            "specificity",
            "no negative images",
            result,
        )
        result["ppv"] = _ratio(
            (is_pos & said_pos).sum(), said_pos.sum(), "ppv", "nothing predicted positive", result
        )
        result["npv"] = _ratio(
            (~is_pos & ~said_pos).sum(),
            (~said_pos).sum(),
            "npv",
            "nothing predicted negative",
            result,
        )
        result["f1"] = float(skm.f1_score(is_pos, said_pos, zero_division=0))
        if len(present) < 2:
            result["roc_auc"] = None
            result["notes"].append("roc_auc undefined: only one class among the true labels")
        else:
            result["roc_auc"] = float(skm.roc_auc_score(is_pos, probs[:, pos]))
    else:
        recall = skm.recall_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
        result["recall_per_class"] = {n: float(r) for n, r in zip(class_names, recall, strict=True)}
        if len(present) < n_classes:
            result["roc_auc"] = None
            result["notes"].append("roc_auc undefined: not every class among the true labels")
        else:
            result["roc_auc"] = float(
                skm.roc_auc_score(y_true, probs, multi_class="ovr", labels=labels)
            )
    return result


def _ratio(num: int, den: int, name: str, why: str, result: dict[str, Any]) -> float | None:
    if den == 0:
        result["notes"].append(f"{name} undefined: {why}")
        return None
    return float(num / den)
