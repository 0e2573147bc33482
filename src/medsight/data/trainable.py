"""Data a model can learn from: refuse degenerate data before it is decoded, with the fix.

A run on one class "trains" to loss 0; a class of three images or a validation split without
one of the classes gives figures that mean nothing. Each check raises one :class:`DataError`
line that names the class, the split or the folder and says what to change.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from medsight.data.labels import LabelRule
from medsight.data.multilabel import MultiLabelRule
from medsight.data.patients import DEFAULT_RULE, PatientRule
from medsight.data.sources import ImageTable, load_table
from medsight.errors import DataError

log = logging.getLogger(__name__)
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
    path: str | Path,
    patients: PatientRule = DEFAULT_RULE,
    labels: LabelRule | None = None,
    multi: MultiLabelRule | None = None,
) -> ImageTable:
    """:func:`load_table` (relabelled by ``labels``, or read as several labels per image by
    ``multi``), except that a folder which is really a metadata sheet or a ``.npz`` (so it
    gives no classes, or a single one) says so instead."""
    hint = folder_hint(path)
    try:
        table = load_table(path, patients=patients, multi=multi)
        table = table if multi else (labels or LabelRule()).apply(table)
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
    fewer = f"; or raise data.limit (now {limit})" if limit else ""
    if table.multi_label:
        return _check_labels(table, fewer)
    counts = class_counts(table)
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


def _check_labels(table: ImageTable, fewer: str) -> None:
    """Each label of a multi-label task has :data:`MIN_PER_CLASS` images with it and without it
    (recorded ones: a missing value is neither)."""
    targets = table.targets
    for j, name in enumerate(table.class_names):
        for value, kind in ((1, "with"), (0, "without")):
            n = int((targets[:, j] == value).sum())
            if n < MIN_PER_CLASS:
                raise DataError(
                    f"{table.source}: only {n} image(s) {kind} label {name!r} (fewer than the "
                    f"{MIN_PER_CLASS} needed to train on and hold out); add images or leave it "
                    "out of data.labels" + fewer
                )


def _check_split_labels(table: ImageTable, given: frozenset[str]) -> None:
    """Train holds images with and without every label (else it cannot be learned); a val or
    test split without a label's positives is allowed, and said: that label keeps threshold
    0.5 (val) or has no figures (test)."""
    split = table.frame["split"].to_numpy()
    targets = table.targets
    for name in SPLITS:
        rows = targets[split == name]
        if not len(rows):
            continue
        for j, label in enumerate(table.class_names):
            if (rows[:, j] == 1).any() and (rows[:, j] == 0).any():
                continue
            kind = "with" if not (rows[:, j] == 1).any() else "without"
            if name == "train":
                where = "the data's own train split" if name in given else "the data"
                raise DataError(
                    f"the train split has no images {kind} label {label!r}; a model cannot "
                    f"learn it: add such images to {where} or leave it out of data.labels"
                )
            log.warning(
                "the %s split has no images %s label %r: its figures for that label are "
                "undefined%s",
                name,
                kind,
                label,
                " and its threshold stays 0.5" if name == "val" else "",
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
    if table.multi_label:
        return _check_split_labels(table, given)
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
    if table.multi_label:
        for k in range(folds):
            positives = (table.targets[fold_of == k] == 1).sum(axis=0)
            if (positives == 0).any():
                name = table.class_names[int(np.argmin(positives))]
                raise DataError(
                    f"fold {k} of {folds} has no images with label {name!r} (kept together by "
                    "patient); use fewer folds (--folds) or add data"
                )
        return
    for k in range(folds):
        labels = set(table.frame.loc[fold_of == k, "label"])
        missing = [c for c in table.class_names if c not in labels]
        if missing:
            n = class_counts(table)[missing[0]]
            raise DataError(
                f"fold {k} of {folds} has no {missing[0]!r} images (the class has {n} in all, "
                "kept together by patient); use fewer folds (--folds) or add data"
            )
