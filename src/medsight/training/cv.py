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
from lightning.fabric.utilities.rank_zero import rank_zero_only

from medsight.config import Recipe, save_recipe
from medsight.data.sources import ImageTable
from medsight.data.splits import assign_folds
from medsight.errors import ConfigError
from medsight.evaluation.metrics import classification_metrics
from medsight.fsutil import atomic_write_text
from medsight.training.fit import fit_prepared
from medsight.training.lungs import lungs_for_run
from medsight.training.prepare import crop_to_lungs, hashed_table, prepare, prepare_run_dir


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
    out = Path(out)
    is_zero = rank_zero_only.rank == 0
    if is_zero:
        prepare_run_dir(out, overwrite)
        save_recipe(recipe, out / "config.yaml")
    table = hashed_table(recipe, data, out if is_zero else None)
    if table.has_splits:
        table = ImageTable(
            table.frame.assign(split=None), table.class_names, table.source, table.skipped
        )  # k-fold replaces any given split
    lung_crop = recipe.preprocess.lung_crop
    if lung_crop is not None and lung_crop.model is None:  # one lung model for every fold
        lungs_for_run(lung_crop, data, out, recipe.train.seed, reuse=not is_zero)
        recipe = recipe.model_copy(deep=True)
        recipe.preprocess.lung_crop.model = str(out / "lungs")
    fold_of = assign_folds(table, folds, recipe.train.seed, by=recipe.data.split_by)
    predictions = []
    for k in range(folds):
        frame = table.frame.assign(split=np.where(fold_of == k, "test", None))
        fold_table = ImageTable(frame, table.class_names, table.source, table.skipped)
        run = out / f"fold-{k}"
        if is_zero:
            prepare_run_dir(run, overwrite)
            save_recipe(recipe, run / "config.yaml")
        prepared = prepare(recipe, data, run, write=is_zero, table=fold_table)
        prepared = crop_to_lungs(recipe, prepared, data, run, reuse=not is_zero)
        fit_prepared(recipe, prepared, run, devices)
        if is_zero:
            predictions.append(pd.read_csv(run / "predictions.csv").assign(fold=k))
    if is_zero:
        _pool(out, pd.concat(predictions, ignore_index=True), table.class_names)
    return out


def _pool(out: Path, predictions: pd.DataFrame, class_names: list[str]) -> None:
    """Out-of-fold metrics over every image, plus each fold's own figure."""
    probs = predictions[[f"p_{name}" for name in class_names]].to_numpy()
    labels = predictions["label"].map({n: i for i, n in enumerate(class_names)}).to_numpy()
    specs = {
        k: json.loads((out / f"fold-{k}" / "bundle" / "bundle.json").read_text())
        for k in sorted(predictions["fold"].unique())
    }
    positive = specs[0]["positive_class"]
    # each image is decided at its own fold's threshold, as that fold's model predicted it
    thresholds = predictions["fold"].map({k: spec["threshold"] for k, spec in specs.items()})
    pooled = classification_metrics(
        labels,
        probs,
        class_names,
        class_names.index(positive) if positive else None,
        thresholds.to_numpy(dtype=float),
    )
    if "threshold" in pooled:
        pooled["threshold"] = [spec["threshold"] for spec in specs.values()]
    per_fold = [
        json.loads((out / f"fold-{k}" / "metrics.json").read_text())
        for k in sorted(predictions["fold"].unique())
    ]
    accuracies = [m["accuracy"] for m in per_fold]
    pooled.update(
        split="out-of-fold",
        folds=len(per_fold),
        fold_accuracy=accuracies,
        fold_accuracy_mean=float(np.mean(accuracies)),
        fold_accuracy_std=float(np.std(accuracies)),
    )
    predictions.to_csv(out / "predictions.csv", index=False)
    atomic_write_text(out / "metrics.json", json.dumps(pooled, indent=2))
