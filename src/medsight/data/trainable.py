"""Data a model can learn from: refuse degenerate data before it is decoded, with the fix.

A run on one class "trains" to loss 0; a class of three images or a validation split without
one of the classes gives figures that mean nothing. Each check raises one :class:`DataError`
line that names the class, the split or the folder and says what to change.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medsight.data.labels import LabelRule
from medsight.data.patients import DEFAULT_RULE, PatientRule
from medsight.data.sources import ImageTable, load_table
from medsight.errors import DataError

MIN_PER_CLASS = 5  # fewer cannot be both trained on and held out
SPLITS = ("train", "val", "test")


def folder_hint(path: str | Path) -> str | None:
    """What a folder that is not a class-folder tree probably is, and what to pass instead."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        return None
    if (folder / "metadata.csv").is_file():
        return (
            "holds a metadata.csv (the ieee8023 COVID-19 collection?), not one sub-folder per "
            "class: curate it with a COVID recipe (--recipe covid) or "
            "data.curation=covid-vs-normal (docs/recipes.md), or pass the CSV itself"
        )
    found = sorted(folder.glob("*.npz")) or sorted(folder.glob("*/*.npz"))
    if found:
        return f"holds a .npz file, not class folders: pass the .npz itself (--data {found[0]})"
    return None


def load_trainable(
    path: str | Path, patients: PatientRule = DEFAULT_RULE, labels: LabelRule | None = None
) -> ImageTable:
    """:func:`load_table` (relabelled by ``labels``), except that a folder which is really a
    metadata sheet or a ``.npz`` (so it gives no classes, or a single one) says so instead."""
    hint = folder_hint(path)
    try:
        table = (labels or LabelRule()).apply(load_table(path, patients=patients))
    except DataError as exc:
        if hint:
            raise DataError(f"{path}: {hint}") from exc
        raise
    if hint and len(_nonempty(class_counts(table))) < 2:
        raise DataError(f"{path}: {hint}")
    return table


def class_counts(table: ImageTable) -> dict[str, int]:
    """Images per class, in class order, zero for a class without images."""
    counts = table.frame["label"].value_counts()
    return {name: int(counts.get(name, 0)) for name in table.class_names}


def _nonempty(counts: dict[str, int]) -> dict[str, int]:
    return {name: n for name, n in counts.items() if n}


def _listing(counts: dict[str, int]) -> str:
    return ", ".join(f"{name}: {n}" for name, n in counts.items())


def check_classes(table: ImageTable, limit: int | None = None) -> None:
    """At least two classes with at least :data:`MIN_PER_CLASS` images each, counted on what
    would be trained on (after ``data.limit``)."""
    counts = class_counts(table)
    fewer = f"; or raise data.limit (now {limit})" if limit else ""
    if len(_nonempty(counts)) < 2:
        raise DataError(
            f"{table.source}: only one class has images ({_listing(counts)}); a classifier "
            "needs at least two: give one sub-folder (or label) per class" + fewer
        )
    for name, n in counts.items():
        if n < MIN_PER_CLASS:
            raise DataError(
                f"{table.source}: class {name!r} has only {n} image(s), fewer than the "
                f"{MIN_PER_CLASS} needed to train on and hold out; add images of it or leave "
                "it out" + fewer
            )


def check_split_classes(
    table: ImageTable, given: frozenset[str] = frozenset(), limit: int | None = None
) -> None:
    """Train and val hold images, and every split present holds every class. ``given``: the
    splits the data came with (the fix is then in the data, not in a fraction); ``limit``: the
    ``data.limit`` that subsampled the table."""
    split = table.frame["split"]
    for needed in ("train", "val"):
        if not (split == needed).any():
            raise DataError(
                f"the {needed} split is empty; add data or adjust "
                "data.val_fraction / data.test_fraction"
            )
    for name in SPLITS:
        labels = set(table.frame.loc[split == name, "label"])
        missing = [c for c in table.class_names if c not in labels] if labels else []
        if not missing:
            continue
        if name in given:
            fix = f"add {missing[0]!r} images to the data's own {name} split"
        else:
            fraction = "" if name == "train" else f"raise data.{name}_fraction or "
            fix = f"{fraction}add images of more {missing[0]!r} patients"
        fewer = f", or raise data.limit (now {limit})" if limit else ""
        raise DataError(
            f"the {name} split has no {missing[0]!r} images "
            f"({_listing(class_counts(table.subset(name)))}; {_patients(table, missing[0])}); "
            f"{fix}{fewer}"
        )


def _patients(table: ImageTable, name: str) -> str:
    """How many patient groups a class has: a patient's images all go to one split."""
    rows = table.frame[table.frame["label"] == name]
    known = rows["patient"].notna() & (rows["patient"] != "")
    groups = rows.loc[known, "patient"].nunique() + int((~known).sum())
    return f"its {len(rows)} image(s) come from {groups} patient(s), each kept in one split"


def check_fold_classes(table: ImageTable, fold_of: np.ndarray) -> None:
    """Every cross-validation fold holds every class, before the first fold trains."""
    folds = int(fold_of.max()) + 1
    for k in range(folds):
        labels = set(table.frame.loc[fold_of == k, "label"])
        missing = [c for c in table.class_names if c not in labels]
        if missing:
            n = class_counts(table)[missing[0]]
            raise DataError(
                f"fold {k} of {folds} has no {missing[0]!r} images (the class has {n} in all, "
                "kept together by patient); use fewer folds (--folds) or add data"
            )
