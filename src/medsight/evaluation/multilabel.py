"""Multi-label tasks (NIH ChestX-ray14, CheXpert style): L independent findings per image.

Each label is its own yes/no question, so it gets its own temperature, threshold and figures.
A missing label (NaN in ``targets``) is left out of every figure of that label: counting it as
negative would score the model against a reading nobody made. The intervals resample patients
like every other figure (:func:`medsight.evaluation.bootstrap.bootstrap`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medsight.errors import DataError
from medsight.evaluation.bootstrap import bootstrap
from medsight.evaluation.calibration import expected_calibration_error, fit_temperature
from medsight.evaluation.ranking import average_precision, roc_auc
from medsight.evaluation.report import figure_text
from medsight.evaluation.thresholds import choose_threshold

LABEL_FIGURES = ("roc_auc", "pr_auc", "sensitivity", "specificity", "ppv", "f1", "brier")
MACRO_FIGURES = ("roc_auc", "pr_auc", "sensitivity", "specificity", "f1")
AVERAGES = (
    "macro_roc_auc",
    "micro_roc_auc",
    "macro_pr_auc",
    "micro_pr_auc",
    "macro_sensitivity",
    "macro_specificity",
    "macro_f1",
    "micro_f1",
)
# the columns of per_label_rows: a label's counts, its threshold and these figures
TABLE_FIGURES = ("roc_auc", "pr_auc", "sensitivity", "specificity")
PER_LABEL_HEADER = ["Label", "Images", "Positives", "Threshold"]
PER_LABEL_HEADER += ["ROC-AUC", "PR-AUC", "Sensitivity", "Specificity"]


def check_targets(targets: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """``targets`` as a float (N, L) array of 1, 0 or NaN, matching ``probs`` in shape."""
    truth = np.asarray(targets, dtype=np.float64)
    if truth.ndim != 2 or truth.shape != np.shape(probs):
        raise DataError(
            f"multi-label targets {truth.shape} and scores {np.shape(probs)} must both be "
            "(images, labels)"
        )
    if not np.isin(truth[~np.isnan(truth)], (0.0, 1.0)).all():
        raise DataError("multi-label targets must be 1 (present), 0 (absent) or NaN (missing)")
    if not np.isfinite(probs).all():
        raise DataError("multi-label scores must be finite numbers")
    return truth


def label_temperatures(logits: np.ndarray, targets: np.ndarray) -> list[float]:
    """Per label, the temperature of its sigmoid fitted on its labelled rows (1.0 without both
    classes): each finding is over- or under-confident in its own way."""
    z = np.asarray(logits, dtype=np.float64)
    truth = check_targets(targets, z)
    out = []
    for j in range(truth.shape[1]):
        seen = ~np.isnan(truth[:, j])
        # sigmoid(z / T) is the softmax of (0, z) / T: the multi-class fit applies unchanged
        pair = np.stack([np.zeros(seen.sum()), z[seen, j]], axis=1)
        out.append(fit_temperature(pair, truth[seen, j].astype(np.int64)))
    return out


def label_thresholds(
    targets: np.ndarray, probs: np.ndarray, rule: str
) -> tuple[list[float], list[str]]:
    """Per label, the threshold ``rule`` picks on its labelled rows, and how it was chosen."""
    truth = check_targets(targets, probs)
    chosen = []
    for j in range(truth.shape[1]):
        seen = ~np.isnan(truth[:, j])
        chosen.append(choose_threshold(truth[seen, j] == 1, np.asarray(probs)[seen, j], rule))
    return [t for t, _ in chosen], [how for _, how in chosen]


def multilabel_metrics(
    targets: np.ndarray,
    probs: np.ndarray,
    thresholds: Sequence[float],
    label_names: Sequence[str],
    groups: Sequence | None = None,
    resamples: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Every figure of a multi-label prediction set, each label at its own threshold on its
    labelled rows, with macro and micro averages, each with a 95 % CI (patients resampled
    when ``groups`` holds patient ids). Undefined figures are None, with a note why."""
    probs = np.asarray(probs, dtype=np.float64)
    truth = check_targets(targets, probs)
    labels = [str(name) for name in label_names]
    if len(labels) != truth.shape[1] or len(set(labels)) != len(labels):
        raise DataError(f"{truth.shape[1]} labels need as many distinct names, not {labels}")
    if {"macro", "micro"} & set(labels):
        raise DataError("'macro' and 'micro' name the averages: rename that label")
    if len(thresholds) != len(labels):
        raise DataError(f"{len(labels)} labels need {len(labels)} thresholds, not {thresholds}")
    said = probs >= np.asarray(thresholds, dtype=np.float64)
    figures, record = bootstrap(
        lambda rows: _figures(truth[rows], probs[rows], said[rows], labels),
        len(truth),
        groups,
        resamples,
        seed,
    )
    per_label = {}
    for j, label in enumerate(labels):
        seen = ~np.isnan(truth[:, j])
        y, p = truth[seen, j].astype(np.int64), probs[seen, j]
        per_label[label] = {
            "n": int(seen.sum()),
            "positives": int(y.sum()),
            "negatives": int(len(y) - y.sum()),
            "threshold": float(thresholds[j]),
            **{key: figures.pop(f"{label}_{key}") for key in LABEL_FIGURES},
            "ece": expected_calibration_error(y, np.stack([1 - p, p], 1)) if len(y) else None,
        }
    return {
        "task": "multilabel",
        "n": int(len(truth)),
        "labels": labels,
        "per_label": per_label,
        **{key: figures[key]["value"] for key in AVERAGES},
        "label_accuracy": figures["label_accuracy"]["value"],
        "figures": figures,
        "bootstrap": record,
        "notes": _notes(truth, said, per_label, figures),
    }


def per_label_rows(metrics: dict[str, Any]) -> list[list[str]]:
    """The per-label table of a multi-label evaluation (columns: :data:`PER_LABEL_HEADER`),
    each figure with its 95 % CI, so a weak label is not hidden behind the averages."""
    return [
        [label, str(row["n"]), str(row["positives"]), f"{row['threshold']:.4f}"]
        + [figure_text(row.get(key)) for key in TABLE_FIGURES]
        for label, row in (metrics.get("per_label") or {}).items()
    ]


def _figures(
    truth: np.ndarray, probs: np.ndarray, said: np.ndarray, labels: list[str]
) -> dict[str, float | None]:
    """The flat figures of one (re)sample: ``<label>_<figure>``, the averages, label accuracy."""
    seen = ~np.isnan(truth)
    pos, neg = seen & (truth == 1), seen & (truth == 0)
    tp, fp = (pos & said).sum(0), (neg & said).sum(0)
    fn, tn = (pos & ~said).sum(0), (neg & ~said).sum(0)
    squared = np.where(seen, (probs - np.nan_to_num(truth)) ** 2, 0.0).sum(0)
    per: dict[str, list[float | None]] = {
        "sensitivity": _ratios(tp, tp + fn),
        "specificity": _ratios(tn, tn + fp),
        "ppv": _ratios(tp, tp + fp),
        "f1": _ratios(2 * tp, 2 * tp + fp + fn),
        "brier": _ratios(squared, seen.sum(0)),
    }
    ranked = [_ranking(pos[seen[:, j], j], probs[seen[:, j], j]) for j in range(len(labels))]
    per["roc_auc"], per["pr_auc"] = [r for r, _ in ranked], [a for _, a in ranked]
    out = {f"{label}_{key}": per[key][j] for key in LABEL_FIGURES for j, label in enumerate(labels)}
    for key in MACRO_FIGURES:
        defined = [v for v in per[key] if v is not None]
        out[f"macro_{key}"] = float(np.mean(defined)) if defined else None
    out["micro_roc_auc"], out["micro_pr_auc"] = _ranking(pos[seen], probs[seen])
    out["micro_f1"] = _ratio(2 * tp.sum(), (2 * tp + fp + fn).sum())
    out["label_accuracy"] = _ratio((tp + tn).sum(), seen.sum())
    return out


def _ranking(is_positive: np.ndarray, score: np.ndarray) -> tuple[float | None, float | None]:
    """ROC-AUC and PR-AUC (average precision); None without both classes."""
    if is_positive.all() or not is_positive.any():
        return None, None
    return roc_auc(is_positive, score), average_precision(is_positive, score)


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den else None


def _ratios(num: np.ndarray, den: np.ndarray) -> list[float | None]:
    return [_ratio(a, b) for a, b in zip(num.tolist(), den.tolist(), strict=True)]


def _notes(
    truth: np.ndarray, said: np.ndarray, per_label: dict[str, dict[str, Any]], averages: dict
) -> list[str]:
    """Why each undefined figure is undefined, naming the label."""
    notes = []
    for j, (label, row) in enumerate(per_label.items()):
        if not row["n"]:
            notes.append(f"{label}: no image has this label, so every figure of it is undefined")
            continue
        predicted = int(said[~np.isnan(truth[:, j]), j].sum())
        reasons = {
            "no positive image": () if row["positives"] else ("roc_auc", "pr_auc", "sensitivity"),
            "no negative image": () if row["negatives"] else ("roc_auc", "pr_auc", "specificity"),
            "nothing predicted positive": () if predicted else ("ppv", "f1"),
        }
        for why, keys in reasons.items():
            undefined = [key for key in keys if row[key]["value"] is None]
            if undefined:
                among = f"among its {row['n']} labelled images"
                notes.append(f"{label}: {', '.join(undefined)} undefined: {why} {among}")
    for key in (key for key in AVERAGES if averages[key]["value"] is None):
        pooled = "the labelled findings, pooled, do not define it"
        why = "no label defines it" if key.startswith("macro") else pooled
        notes.append(f"{key} undefined: {why}")
    return notes
