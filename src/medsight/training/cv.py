"""Patient-grouped k-fold cross-validation: K models, pooled out-of-fold metrics.

Each fold's held-out patients are the ``test`` split of a complete run (``RUN/fold-k``); the
validation split is carved from the other folds by patient. Pooling the K held-out prediction
sets gives one estimate over every image, as in Rajaraman et al. 2018 (malaria).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from medsight.bundle import read_spec
from medsight.config import Recipe
from medsight.data.sources import ImageTable
from medsight.data.splits import assign_folds
from medsight.data.trainable import check_fold_classes
from medsight.errors import ConfigError
from medsight.evaluation.metrics import classification_metrics
from medsight.fsutil import atomic_write_text
from medsight.training.lungs import lungs_for_run
from medsight.training.prepare import hashed_table
from medsight.training.run import Run
from medsight.training.tracking import FoldTracking


def cross_validate(
    recipe: Recipe,
    data: str | Path,
    out: str | Path,
    folds: int,
    overwrite: bool = False,
    devices: int = 1,
) -> Path:
    """Train one model per fold into ``out/fold-k`` and pool their held-out predictions."""
    if folds < 2:
        raise ConfigError(f"--folds needs at least 2 folds, got {folds}")
    parent = Run.create(recipe, out, overwrite, devices, data)
    out = parent.out
    table = hashed_table(recipe, data, out if parent.writes else None)
    if table.multi_label:
        raise ConfigError(
            "--folds pools one label per image; for a multi-label task train once (its "
            "test split gets per-label figures with patient-bootstrap CIs)"
        )
    if table.has_splits:
        table = ImageTable(
            table.frame.assign(split=None), table.class_names, table.source, table.skipped
        )  # k-fold replaces any given split
    fold_of = assign_folds(table, folds, recipe.train.seed, by=recipe.data.split_by)
    check_fold_classes(table, fold_of)
    lung_crop = recipe.preprocess.lung_crop
    if lung_crop is not None and lung_crop.model is None:  # one lung model for every fold
        lungs_for_run(lung_crop, data, out, recipe.train.seed, reuse=not parent.writes)
        recipe = recipe.model_copy(deep=True)
        recipe.preprocess.lung_crop.model = str(out / "lungs")
    tracking = FoldTracking(recipe, out, folds, parent.writes)  # the folds' parent run
    predictions = []
    try:
        for k in range(folds):
            frame = table.frame.assign(split=np.where(fold_of == k, "test", None))
            fold_table = ImageTable(frame, table.class_names, table.source, table.skipped)
            run = Run.create(recipe, out / f"fold-{k}", overwrite, devices)
            tracking.nest(run.out)
            run.fit(run.prepare(data, table=fold_table))
            if run.writes:
                names = {"path": str, "label": str, "prediction": str}
                rows = pd.read_csv(run.out / "predictions.csv", dtype=names, keep_default_na=False)
                predictions.append(rows.assign(fold=k))
    except BaseException:
        tracking.fail()  # the parent run must not say RUNNING forever
        raise
    if parent.writes:
        _pool(out, pd.concat(predictions, ignore_index=True), table.class_names)
        tracking.finish()
    return out


def _pool(out: Path, predictions: pd.DataFrame, class_names: list[str]) -> None:
    """Out-of-fold metrics over every image, plus each fold's own figure."""
    index = {n: i for i, n in enumerate(class_names)}
    probs = predictions[[f"p_{name}" for name in class_names]].to_numpy()
    labels = predictions["label"].map(index).to_numpy()
    # each image keeps its own fold's decision, as that fold's bundle made it
    decisions = predictions["prediction"].map(index).to_numpy()
    fold_numbers = sorted(predictions["fold"].unique())
    specs = [read_spec(out / f"fold-{k}") for k in fold_numbers]
    pooled = classification_metrics(labels, probs, decisions, class_names, specs[0].positive_index)
    if specs[0].positive_index is not None:
        pooled["threshold"] = [spec.threshold for spec in specs]
    per_fold = [json.loads((out / f"fold-{k}" / "metrics.json").read_text()) for k in fold_numbers]
    accuracies = [m["accuracy"] for m in per_fold]
    pooled.update(
        split="out-of-fold",
        folds=len(per_fold),
        fold_accuracy=accuracies,
        fold_accuracy_mean=float(np.mean(accuracies)),
        fold_accuracy_std=float(np.std(accuracies)),
    )
    atomic_write_text(out / "predictions.csv", predictions.to_csv(index=False))
    atomic_write_text(out / "metrics.json", json.dumps(pooled, indent=2))
