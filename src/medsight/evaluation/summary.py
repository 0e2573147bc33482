"""One evaluation of a set of predictions: figures with CIs, operating points, calibration.

Training (val and test splits) and ``medsight evaluate`` both go through
:func:`evaluate_predictions`, so a run's ``metrics.json`` and a later evaluation agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import binomtest

from medsight.bundle import BundleSpec
from medsight.evaluation.bootstrap import bootstrap
from medsight.evaluation.calibration import (
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
)
from medsight.evaluation.metrics import classification_metrics, figures
from medsight.evaluation.multilabel import label_temperatures, label_thresholds, multilabel_metrics
from medsight.evaluation.plots import (
    plot_confusion,
    plot_label_rocs,
    plot_reliability,
    plot_roc_pr,
    plot_worst_errors,
)
from medsight.evaluation.thresholds import choose_threshold, operating_points


def evaluate_predictions(
    y_true: np.ndarray,
    logits: np.ndarray,
    spec: BundleSpec,
    groups: Sequence | None = None,
    resamples: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Every figure at the bundle's threshold on its calibrated probabilities, each with a 95 %
    CI (patients resampled when ``groups`` holds patient ids), plus operating points and the
    calibration before and after temperature scaling. A multi-label bundle's ``y_true`` is its
    (N, L) targets (NaN: not recorded), scored label by label (``per_label``)."""
    if spec.task == "multilabel":
        return multilabel_metrics(
            np.asarray(y_true, dtype=np.float32),
            spec.probabilities(logits),
            list(spec.label_thresholds or [0.5] * len(spec.class_names)),
            list(spec.class_names),
            groups,
            resamples,
            seed,
        )
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = spec.probabilities(logits)
    y_pred, pos = spec.decide(probs), spec.positive_index
    classes = None if pos is not None else list(spec.class_names)
    metrics = classification_metrics(y_true, probs, y_pred, spec.class_names, pos)
    if pos is not None and len(y_true):
        metrics["threshold"] = spec.threshold
    if not len(y_true):
        return metrics
    metrics["figures"], metrics["bootstrap"] = bootstrap(
        lambda rows: figures(y_true[rows], probs[rows], y_pred[rows], pos, None, classes),
        len(y_true),
        groups,
        resamples,
        seed,
    )
    accuracy = metrics["figures"]["accuracy"]
    if accuracy["ci_low"] is not None and accuracy["ci_low"] == accuracy["ci_high"]:
        correct = int(round(metrics["accuracy"] * len(y_true)))
        low, high = binomtest(correct, len(y_true)).proportion_ci(method="exact")
        metrics["notes"].append(
            f"every bootstrap resample has the same accuracy ({correct} of {len(y_true)} right), "
            f"so the bootstrap shows no uncertainty; the exact (Clopper-Pearson) 95 % interval "
            f"for the accuracy is [{low:.3f}, {high:.3f}]"
        )
    if pos is not None:
        metrics["threshold_rule"] = spec.threshold_rule
        metrics["operating_points"] = operating_points(y_true == pos, probs[:, pos])
    raw = spec.probabilities(logits, calibrated=False)
    metrics["calibration"] = {
        "temperature": spec.temperature,
        "ece_before": expected_calibration_error(y_true, raw),
        "ece_after": expected_calibration_error(y_true, probs),
        "reliability_before": reliability_bins(y_true, raw),
        "reliability_after": reliability_bins(y_true, probs),
    }
    return metrics


def domain_summary(
    guard: dict[str, Any] | None, domain_score: np.ndarray, split: str
) -> dict[str, Any]:
    """What the report and the model card say about the domain check on one split: how many
    images it flagged (None: the bundle has no guard, so nobody can tell)."""
    if guard is None:
        return {"guard": None, "split": split, "out_of_domain": None, "n": len(domain_score)}
    flagged = int((np.asarray(domain_score) > 1.0).sum())
    rate = flagged / len(domain_score) if len(domain_score) else None
    return {
        "guard": guard,
        "split": split,
        "n": len(domain_score),
        "flagged": flagged,
        "out_of_domain": rate,
    }


def calibrate_spec(
    spec: BundleSpec, val_labels: np.ndarray, val_logits: np.ndarray, rule: str, calibrate: bool
) -> BundleSpec:
    """The spec with its temperature fitted and its threshold chosen on the validation split
    (temperature first: the threshold applies to the calibrated probability); a multi-label
    bundle gets a temperature and a threshold per label."""
    if spec.task == "multilabel":
        n = len(spec.class_names)
        temperatures = label_temperatures(val_logits, val_labels) if calibrate else [1.0] * n
        spec = spec.model_copy(update={"label_temperatures": temperatures})
        thresholds, hows = label_thresholds(val_labels, spec.probabilities(val_logits), rule)
        rules = [
            how if how.startswith("fixed") else f"{how} on the validation split" for how in hows
        ]
        return spec.model_copy(
            update={"label_thresholds": thresholds, "label_threshold_rules": rules}
        )
    temperature = fit_temperature(val_logits, val_labels) if calibrate else 1.0
    spec = spec.model_copy(update={"temperature": temperature})
    update: dict[str, Any] = {}
    pos = spec.positive_index
    if pos is not None:
        probs = spec.probabilities(val_logits)
        threshold, how = choose_threshold(np.asarray(val_labels) == pos, probs[:, pos], rule)
        where = "" if how.startswith("fixed") else " on the validation split"
        update.update(threshold=threshold, threshold_rule=how + where)
    return spec.model_copy(update=update)


def write_plots(
    folder: Path,
    pixels: np.ndarray,
    y_true: np.ndarray,
    probs: np.ndarray,
    spec: BundleSpec,
    metrics: dict[str, Any],
    title: str,
    groups: Sequence | None = None,
) -> None:
    """The evaluation figures of one split from its calibrated probabilities: confusion
    matrix, ROC/PR with bands, reliability diagram and the worst errors (a stale plot from an
    earlier evaluation is removed). A multi-label bundle gets ROC curves per label."""
    folder.mkdir(parents=True, exist_ok=True)
    if spec.task == "multilabel":
        plot_label_rocs(y_true, probs, spec.class_names, folder / "roc_per_label.png")
        return
    predicted, pos = spec.decide(probs), spec.positive_index
    plot_confusion(
        np.array(metrics["confusion_matrix"]),
        spec.class_names,
        folder / "confusion_matrix.png",
        title,
    )
    roc = folder / "roc_pr.png"
    roc.unlink(missing_ok=True)
    if pos is not None and metrics.get("roc_auc") is not None:
        plot_roc_pr(y_true == pos, probs[:, pos], groups, roc)
    calibration = metrics["calibration"]
    plot_reliability(
        calibration["reliability_before"],
        calibration["reliability_after"],
        folder / "reliability.png",
    )
    worst = folder / "worst_errors.png"
    worst.unlink(missing_ok=True)
    plot_worst_errors(pixels, y_true, probs, predicted, spec.class_names, worst)
