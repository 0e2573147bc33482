"""The Python API; each function is one ``medsight`` command (see :mod:`medsight.cli`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medsight.config import load_recipe, recipe_names
from medsight.data.inspect import Inspection, inspect_data
from medsight.data.sources import ImageTable, load_table
from medsight.errors import DataError
from medsight.fsutil import atomic_write_text


def list_recipes() -> dict[str, str]:
    """Built-in recipe names with their one-line descriptions."""
    return {name: load_recipe(name).description for name in recipe_names()}


def inspect(path: str | Path) -> Inspection:
    """Counts per split and class, patients, sizes, modes, duplicates and unreadable files."""
    return inspect_data(path)


def download(name: str, root: str | Path | None = None) -> Path:
    """Fetch a public dataset into the cache (``MEDSIGHT_DATA``); returns its folder."""
    from medsight.data.download import download_dataset

    return download_dataset(name, Path(root) if root else None)


def train(
    recipe: str,
    data: str | Path,
    out: str | Path,
    epochs: int | None = None,
    seed: int | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    overwrite: bool = False,
    devices: int = 1,
    folds: int | None = None,
) -> Path:
    """Train a recipe (built-in name or YAML path) on ``data``; returns the run directory.

    ``devices`` > 1 trains with DDP across that many processes on this machine (or per node,
    under torchrun / SLURM). ``folds`` = K trains K models by patient-grouped k-fold
    cross-validation (``RUN/fold-k``) and pools their out-of-fold metrics in ``RUN``.
    """
    from medsight.train.cv import cross_validate
    from medsight.train.fit import train as fit

    extra = list(overrides)
    if epochs is not None:
        extra.append(f"train.epochs={epochs}")
    if seed is not None:
        extra.append(f"train.seed={seed}")
    config = load_recipe(recipe, extra)
    if folds is not None:
        return cross_validate(config, data, out, folds, overwrite=overwrite, devices=devices)
    return fit(config, data, out, overwrite=overwrite, devices=devices)


def resume(run: str | Path, devices: int = 1) -> Path:
    """Continue an interrupted run from its last checkpoint, with its own config and splits."""
    from medsight.train.fit import resume as resume_run

    return resume_run(run, devices=devices)


def _align_classes(table: ImageTable, class_names: list[str]) -> ImageTable:
    unknown = sorted(set(table.class_names) - set(class_names))
    if unknown:
        raise DataError(
            f"{table.source}: classes {unknown} are not known to the model "
            f"(it predicts {class_names}); rename the folders or labels"
        )
    return ImageTable(table.frame, list(class_names), table.source, table.skipped)


def evaluate(
    bundle: str | Path, data: str | Path, out: str | Path, split: str | None = None
) -> dict[str, Any]:
    """Score a bundle on labelled data; writes ``metrics.json`` and ``predictions.csv``.

    ``split`` restricts a source that has splits (e.g. ``RUN/splits.csv`` with
    ``split="test"``: the patients the model never saw).
    """
    from medsight.evaluate.metrics import classification_metrics
    from medsight.serve.bundle import load_bundle
    from medsight.serve.predictor import predict_table

    loaded = load_bundle(bundle)
    table = load_table(data)
    if split:
        if split not in set(table.frame["split"].dropna()):
            raise DataError(
                f"{data}: no images in split {split!r} "
                f"(splits present: {sorted(table.frame['split'].dropna().unique())})"
            )
        table = table.subset(split)
    table = _align_classes(table, loaded.spec.class_names)
    predictions, probs, failures = predict_table(loaded, table)
    aligned = _align_classes(ImageTable(predictions, [], table.source), loaded.spec.class_names)
    metrics = classification_metrics(
        aligned.labels,
        probs,
        loaded.spec.class_names,
        loaded.spec.positive_index,
        loaded.spec.threshold,
    )
    skipped = table.skipped + failures
    metrics.update(
        bundle=str(Path(bundle)),
        data=str(data),
        split=split,
        skipped=[{"path": p, "reason": r} for p, r in skipped],
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "predictions.csv", predictions.to_csv(index=False))
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    return metrics
