"""Classification metrics, with the disease class as the positive class.

:func:`figures` gives the scalar figures that get confidence intervals;
:func:`classification_metrics` adds the confusion matrix, counts, per-class figures, trivial
baselines and notes. Degenerate inputs (one class only, no images, nothing predicted positive)
give ``None`` with a reason in ``notes`` instead of a crash or an unexplained NaN. The
arithmetic is :mod:`medsight.evaluation.ranking`'s: scikit-learn's values at the bootstrap's pace.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from medsight.errors import DataError
from medsight.evaluation.calibration import expected_calibration_error
from medsight.evaluation.ranking import average_precision, class_rates, confusion, mcc, roc_auc


def figures(
    y_true: np.ndarray,
    probs: np.ndarray,
    y_pred: np.ndarray,
    positive_index: int | None,
    notes: list[str] | None = None,
    class_names: list[str] | None = None,
) -> dict[str, float | None]:
    """The scalar figures of one set of predictions: probabilities and the decisions made from
    them (binary, when ``positive_index`` names the disease class: disease vs rest; else macro
    and micro averages, and with ``class_names`` each class's one-vs-rest figures and each
    pair's one-vs-one figures: :func:`class_figures`, so they get CIs too).

    Figures that are undefined on these labels are ``None`` and say why in ``notes``; scores that
    are not numbers (a model whose outputs became NaN) are refused, never ranked.
    """
    notes = [] if notes is None else notes
    if not np.isfinite(probs).all():
        broken = int((~np.isfinite(probs)).any(axis=1).sum())
        raise DataError(
            f"the model gave {broken} of {len(probs)} images a probability that is not a number "
            "(NaN or infinity), so no figure can be computed (a model whose training loss became "
            "NaN gives such outputs)"
        )
    y_true = np.asarray(y_true, dtype=np.int64)
    labels = list(range(probs.shape[1]))
    present = np.unique(y_true)
    matrix = confusion(y_true, y_pred, len(labels))
    out: dict[str, float | None] = {
        "accuracy": float(np.mean(y_true == y_pred)),
        "balanced_accuracy": float(np.mean([(y_pred[y_true == c] == c).mean() for c in present])),
        "mcc": mcc(matrix),
        "ece": expected_calibration_error(y_true, probs),
    }
    onehot = np.eye(len(labels))[y_true]
    out["brier"] = float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))
    if positive_index is not None:
        pos = positive_index
        is_pos, said_pos, p_pos = y_true == pos, y_pred == pos, probs[:, pos]
        out["brier"] = float(np.mean((is_pos - p_pos) ** 2))
        tp, fp = int((is_pos & said_pos).sum()), int((~is_pos & said_pos).sum())
        tn, fn = int((~is_pos & ~said_pos).sum()), int((is_pos & ~said_pos).sum())
        out["sensitivity"] = _ratio(tp, tp + fn, "sensitivity", "no positive images", notes)
        out["specificity"] = _ratio(tn, tn + fp, "specificity", "no negative images", notes)
        out["ppv"] = _ratio(tp, tp + fp, "ppv", "nothing predicted positive", notes)
        out["npv"] = _ratio(tn, tn + fn, "npv", "nothing predicted negative", notes)
        out["f1"] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
        if len(present) < 2:
            out["roc_auc"] = out["pr_auc"] = None
            notes.append("roc_auc and pr_auc undefined: only one class among the true labels")
        else:
            out["roc_auc"] = roc_auc(is_pos, p_pos)
            out["pr_auc"] = average_precision(is_pos, p_pos)
        return out
    rates = class_rates(matrix)
    out["macro_f1"] = float(rates["f1"].mean())
    out["micro_f1"] = float(np.trace(matrix) / matrix.sum())  # every image has one label
    out["macro_sensitivity"] = float(rates["recall"].mean())
    out["macro_ppv"] = float(rates["precision"].mean())
    if len(present) < len(labels):
        out["roc_auc"] = out["micro_roc_auc"] = None
        notes.append("roc_auc undefined: not every class among the true labels")
    else:
        out["roc_auc"] = float(np.mean([roc_auc(y_true == c, probs[:, c]) for c in labels]))
        out["micro_roc_auc"] = roc_auc(onehot.ravel() == 1, probs.ravel())
    if class_names is not None:
        out.update(class_figures(y_true, probs, y_pred, class_names))
    return out


def classification_metrics(
    y_true: np.ndarray,
    probs: np.ndarray,
    y_pred: np.ndarray,
    class_names: list[str],
    positive_index: int | None,
) -> dict[str, Any]:
    """Every figure plus the confusion matrix, class counts, per-class figures and baselines."""
    y_true = np.asarray(y_true, dtype=np.int64)
    result: dict[str, Any] = {"n": int(len(y_true)), "notes": []}
    if not len(y_true):
        result["notes"].append("no images: nothing to evaluate")
        return result
    names = None if positive_index is not None else list(class_names)
    result.update(figures(y_true, probs, y_pred, positive_index, result["notes"], names))
    labels = list(range(len(class_names)))
    result["confusion_matrix"] = confusion(y_true, y_pred, len(labels)).tolist()
    result["class_names"] = list(class_names)
    result["counts"] = {name: int((y_true == i).sum()) for i, name in enumerate(class_names)}
    result["baselines"] = baselines(y_true, class_names, positive_index)
    if positive_index is not None:
        result["positive_class"] = class_names[positive_index]
    else:
        result["per_class"] = per_class(y_true, probs, y_pred, class_names)
        result["recall_per_class"] = {n: v["sensitivity"] for n, v in result["per_class"].items()}
    return result


CLASS_FIGURES = ("sensitivity", "specificity", "ppv", "roc_auc")
PAIR_FIGURES = ("accuracy", "sensitivity", "specificity", "roc_auc")


def class_figures(
    y_true: np.ndarray, probs: np.ndarray, y_pred: np.ndarray, class_names: list[str]
) -> dict[str, float | None]:
    """Flat figures of a multi-class task: ``<class>_<figure>`` one-vs-rest
    (:data:`CLASS_FIGURES`), and ``<A>_vs_<B>_<figure>`` among the images of classes A and B
    only, A positive, scored by P(A) / (P(A) + P(B)) at 0.5 (:data:`PAIR_FIGURES`): the
    bacterial-vs-viral question of a NORMAL / BACTERIAL / VIRAL model."""
    out: dict[str, float | None] = {}
    for name, values in per_class(y_true, probs, y_pred, class_names).items():
        out.update({f"{name}_{key}": values[key] for key in CLASS_FIGURES})
    for a, b in itertools.combinations(range(len(class_names)), 2):
        rows = (y_true == a) | (y_true == b)
        is_a = y_true[rows] == a
        pair = probs[rows][:, [a, b]]
        score = pair[:, 0] / np.maximum(pair.sum(axis=1), 1e-12)
        said_a, key = score >= 0.5, f"{class_names[a]}_vs_{class_names[b]}"
        out[f"{key}_accuracy"] = float((said_a == is_a).mean()) if rows.any() else None
        out[f"{key}_sensitivity"] = _ratio((is_a & said_a).sum(), is_a.sum(), "", "", [])
        out[f"{key}_specificity"] = _ratio((~is_a & ~said_a).sum(), (~is_a).sum(), "", "", [])
        both = 0 < is_a.sum() < len(is_a)
        out[f"{key}_roc_auc"] = roc_auc(is_a, score) if both else None
    return out


def class_rows(class_names: list[str]) -> list[tuple[str, str]]:
    """Report rows (key, label) of :func:`class_figures`."""
    labels = {"sensitivity": "sensitivity", "specificity": "specificity", "ppv": "precision"}
    rows = [
        (f"{name}_{key}", f"{name}: {labels.get(key, 'ROC-AUC (one-vs-rest)')}")
        for name in class_names
        for key in CLASS_FIGURES
    ]
    for a, b in itertools.combinations(class_names, 2):
        names = {"accuracy": "accuracy", "sensitivity": f"sensitivity ({a})"}
        names |= {"specificity": f"specificity ({b})", "roc_auc": "ROC-AUC"}
        rows += [(f"{a}_vs_{b}_{key}", f"{a} vs {b}: {names[key]}") for key in PAIR_FIGURES]
    return rows


def per_class(
    y_true: np.ndarray, probs: np.ndarray, y_pred: np.ndarray, class_names: list[str]
) -> dict[str, dict[str, float | None]]:
    """One-vs-rest figures of each class of a multi-class task."""
    table = {}
    rates = class_rates(confusion(y_true, y_pred, len(class_names)))
    for i, name in enumerate(class_names):
        is_c, said_c = y_true == i, y_pred == i
        notes: list[str] = []
        table[name] = {
            "sensitivity": _ratio((is_c & said_c).sum(), is_c.sum(), "", "", notes),
            "specificity": _ratio((~is_c & ~said_c).sum(), (~is_c).sum(), "", "", notes),
            "ppv": _ratio((is_c & said_c).sum(), said_c.sum(), "", "", notes),
            "f1": float(rates["f1"][i]),
            "roc_auc": roc_auc(is_c, probs[:, i]),
        }
    return table


def baselines(
    y_true: np.ndarray, class_names: list[str], positive_index: int | None
) -> dict[str, Any]:
    """What a model with no skill scores on these labels: always the majority class, and the
    prevalence (a PR-AUC baseline); 62.5 % on Kermany's test set is the first, not skill."""
    counts = np.bincount(y_true, minlength=len(class_names))
    majority = int(counts.argmax())
    out: dict[str, Any] = {
        "majority_class": class_names[majority],
        "majority_accuracy": float(counts[majority] / counts.sum()),
        "prevalence": {
            n: float(c / counts.sum()) for n, c in zip(class_names, counts, strict=True)
        },
        "chance_roc_auc": 0.5,
    }
    if positive_index is not None:
        out["positive_prevalence"] = out["prevalence"][class_names[positive_index]]
    return out


def _ratio(num: int, den: int, name: str, why: str, notes: list[str]) -> float | None:
    if den == 0:
        if name:
            notes.append(f"{name} undefined: {why}")
        return None
    return float(num / den)
