"""What a finished run leaves behind: metrics, plots, the bundle, its model card and the report.

The decision threshold, the calibration temperature and the domain guard's threshold are fitted
on the validation split here (the guard's statistics on the training split), before the test
split is looked at, and stored in the bundle.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from medsight import __version__
from medsight.bundle import (
    Bundle,
    BundleSpec,
    TrainingImages,
    fit_guard,
    predictions_frame,
    save_bundle,
)
from medsight.bundle.seen import SEEN_SPLITS
from medsight.config import Recipe
from medsight.data.patients import patient_coverage
from medsight.data.summary import data_summary
from medsight.errors import TrainingError
from medsight.evaluation.card import model_card
from medsight.evaluation.plots import plot_curves, plot_prediction_grid
from medsight.evaluation.report import write_report
from medsight.evaluation.summary import (
    calibrate_spec,
    domain_summary,
    evaluate_predictions,
    write_plots,
)
from medsight.fsutil import atomic_write_text
from medsight.training.prepare import Prepared

SUMMARY_KEYS = ("split", "n", "accuracy", "sensitivity", "specificity", "roc_auc")
MULTI_LABEL_SUMMARY_KEYS = ("split", "n", "macro_roc_auc", "micro_roc_auc", "macro_pr_auc")


def refuse_diverged(val_logits: np.ndarray, out: Path, recipe: Recipe, best_epoch: int) -> None:
    """Stop with what to change when the kept model's outputs are not numbers (its training
    diverged), instead of fitting a threshold, a temperature and figures to NaN."""
    broken = int((~np.isfinite(val_logits)).any(axis=1).sum())
    if broken:
        raise TrainingError(
            f"training diverged: the kept model (epoch {best_epoch}) gives {broken} of "
            f"{len(val_logits)} validation images outputs that are not numbers (NaN or infinity); "
            f"the losses are in {out / 'history.csv'}. Lower train.lr (now {recipe.train.lr:g}) "
            "and train again"
        )


def write_run_outputs(
    out: Path,
    recipe: Recipe,
    data: Prepared,
    model: nn.Module,
    spec: BundleSpec,
    facts: dict[str, Any],
) -> dict[str, Any]:
    """Calibrate on val, evaluate val and test, then write metrics, plots, bundle, report."""
    bundle = Bundle(model, spec)  # no lung crop here: data.pixels are already cropped
    multi = data.table.multi_label
    labels = data.table.targets if multi else data.table.labels
    split = data.split
    patients = data.table.frame["patient"].to_numpy()
    logits = {
        name: bundle.logits(data.pixels.rows(split == name))
        for name in ("val", "test")
        if (split == name).any()
    }
    refuse_diverged(logits["val"], out, recipe, facts["best_epoch"])
    spec = calibrate_spec(
        spec,
        labels[split == "val"],
        logits["val"],
        recipe.evaluate.threshold,
        recipe.evaluate.calibrate,
    )
    fitted = fit_guard(
        data.pixels.rows(split == "train"),
        data.table.strata[split == "train"],
        data.pixels.rows(split == "val"),
    )
    guard, domain = fitted.guard, fitted.spec
    spec = spec.model_copy(update={"domain": domain})
    domain_scores = {
        name: domain.scores(
            fitted.held_distances
            if name == "val"
            else guard.distances(data.pixels.rows(split == name))
        )
        for name in logits
    }
    results = {
        name: evaluate_predictions(
            labels[split == name],
            values,
            spec,
            groups=list(patients[split == name]),
            seed=recipe.evaluate.bootstrap_seed,
        )
        for name, values in logits.items()
    }
    held_out = "test" if "test" in results else "val"
    held = split == held_out
    split_probs = {name: spec.probabilities(values) for name, values in logits.items()}
    # val's predictions too: what the threshold and temperature were fitted on
    for name, values in split_probs.items():
        file = "predictions.csv" if name == held_out else f"{name}_predictions.csv"
        rows = data.table.frame[split == name]
        table = predictions_frame(rows, values, spec, domain_scores[name])
        atomic_write_text(out / file, table.to_csv(index=False))
    coverage = patient_coverage(data.table.frame)
    metrics = {
        **results[held_out],
        "split": held_out,
        "val": results["val"],
        **facts,
        # the unit the split really used, not the recipe's wish: images without an id are
        # split one by one
        "split_by": coverage.split_by(recipe.data.split_by),
        "images_without_patient": coverage.without,
        "skipped": len(data.skipped),
        "published": recipe.published.model_dump() if recipe.published else None,
        "data": data_summary(data.table),
        "leakage": data.table.frame.attrs.get("leakage"),
        "split_warning": data.split_warning,
        "domain": domain_summary(domain.model_dump(), domain_scores[held_out], held_out),
    }
    metrics["out_of_domain"] = metrics["domain"]["out_of_domain"]
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))

    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    plot_curves(pd.read_csv(out / "history.csv"), plots / "curves.png")
    probs = split_probs[held_out]
    write_plots(plots, data.pixels.rows(held), labels[held], probs, spec, metrics, held_out)
    grid = plots / "predictions.png"
    if not multi:
        plot_prediction_grid(
            data.pixels.rows(held), labels[held], spec.decide(probs), spec.class_names, grid
        )
    summary = {k: metrics.get(k) for k in (MULTI_LABEL_SUMMARY_KEYS if multi else SUMMARY_KEYS)}
    spec = spec.model_copy(update={"metrics": summary, "medsight_version": __version__})
    card = model_card(spec, metrics, recipe)
    atomic_write_text(out / "model_card.md", card)
    seen = data.table.frame[data.table.frame["split"].isin(SEEN_SPLITS)]
    training_images = TrainingImages.record(seen["sha256"], seen["patient"])
    save_bundle(
        out / "bundle",
        model,
        spec,
        card,
        lung_crop=data.lungs,
        guard=guard,
        training_images=training_images,
    )
    write_report(out)
    return metrics
