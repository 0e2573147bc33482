"""What a finished run leaves behind: metrics, plots, the bundle and the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from medsight.config import Recipe
from medsight.evaluate.metrics import classification_metrics
from medsight.evaluate.plots import plot_confusion, plot_curves, plot_prediction_grid
from medsight.evaluate.report import write_run_report
from medsight.fsutil import atomic_write_text
from medsight.serve.bundle import Bundle, BundleSpec, save_bundle
from medsight.serve.predictor import predictions_frame
from medsight.train.prepare import Prepared

SUMMARY_KEYS = ("split", "n", "accuracy", "sensitivity", "specificity", "roc_auc")


def write_run_outputs(
    out: Path,
    recipe: Recipe,
    data: Prepared,
    model: nn.Module,
    spec: BundleSpec,
    facts: dict[str, Any],
) -> dict[str, Any]:
    """Evaluate the best model on val and test, then write metrics, plots, bundle, report."""
    bundle = Bundle(model.eval(), spec)
    labels, split = data.table.labels, data.split
    results: dict[str, dict] = {}
    probs: dict[str, np.ndarray] = {}
    for name in ("val", "test"):
        if (split == name).any():
            probs[name] = bundle.predict_proba(data.pixels[split == name])
            results[name] = classification_metrics(
                labels[split == name],
                probs[name],
                spec.class_names,
                spec.positive_index,
                spec.threshold,
            )
    held_out = "test" if "test" in results else "val"
    _write_predictions(out / "predictions.csv", data, held_out, probs[held_out], spec)
    metrics = {
        **results[held_out],
        "split": held_out,
        "val": results["val"],
        **facts,
        "split_by": recipe.data.split_by,
        "skipped": len(data.skipped),
        "published": recipe.published.model_dump() if recipe.published else None,
    }
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))

    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    held = split == held_out
    plot_curves(pd.read_csv(out / "history.csv"), plots / "curves.png")
    plot_confusion(
        np.array(results[held_out]["confusion_matrix"]),
        spec.class_names,
        plots / "confusion_matrix.png",
        title=f"{held_out} split",
    )
    plot_prediction_grid(
        data.pixels[held],
        labels[held],
        probs[held_out],
        spec.class_names,
        spec.positive_index,
        spec.threshold,
        plots / "predictions.png",
    )
    spec = spec.model_copy(update={"metrics": {k: metrics.get(k) for k in SUMMARY_KEYS}})
    save_bundle(out / "bundle", model, spec)
    write_run_report(out, recipe, data.table, metrics, data.skipped, data.split_warning)
    return metrics


def _write_predictions(
    path: Path, data: Prepared, split: str, probs: np.ndarray, spec: BundleSpec
) -> None:
    frame = data.table.frame[data.split == split]
    atomic_write_text(path, predictions_frame(frame, probs, spec).to_csv(index=False))
