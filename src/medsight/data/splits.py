"""Patient-safe splits and the leakage check.

Splits are stratified by class and grouped by patient by default, and identical images (same
content hash) are kept in one group, so the same picture can never be on both sides. Splitting by
image is possible only when asked for explicitly, to reproduce a tutorial, and is flagged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from medsight.data.patients import patient_coverage
from medsight.data.sources import ImageTable
from medsight.errors import DataError, LeakageError

log = logging.getLogger(__name__)


def split_groups(frame: pd.DataFrame, by: str = "patient") -> np.ndarray:
    """An integer group per row: rows of one patient, or with identical content, share a group.

    Rows without a patient id are their own group (unless their content hash joins them to
    another). ``by="image"`` ignores patients but still keeps identical files together.
    """
    n = len(frame)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union_by(column: str) -> None:
        if column not in frame:
            return
        first: dict[str, int] = {}
        for i, key in enumerate(frame[column]):
            if key is None or (isinstance(key, float) and np.isnan(key)) or key == "":
                continue
            if key in first:
                parent[find(i)] = find(first[key])
            else:
                first[key] = i

    if by == "patient":
        union_by("patient")
    elif by != "image":
        raise DataError(f"unknown split unit {by!r}: use 'patient' or 'image'")
    union_by("sha256")
    roots = [find(i) for i in range(n)]
    return pd.factorize(pd.Series(roots))[0]


def _carve(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A boolean mask of about ``fraction`` of the rows, whole groups, stratified by label."""
    if fraction <= 0:
        return np.zeros(len(labels), dtype=bool)
    n_splits = max(2, round(1 / fraction))
    n_groups = len(np.unique(groups))
    if n_groups < n_splits:
        raise DataError(
            f"only {n_groups} patient groups: too few to hold out {fraction:.0%} "
            "of them; use more data or smaller fractions"
        )
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, held = next(folds.split(np.zeros(len(labels)), labels, groups))
    mask = np.zeros(len(labels), dtype=bool)
    mask[held] = True
    return mask


def assign_splits(
    table: ImageTable, val: float = 0.1, test: float = 0.1, seed: int = 0, by: str = "patient"
) -> ImageTable:
    """Fill in the ``split`` column, respecting any split the data already has.

    Data without splits is divided into train/val/test. Data with a train split but no val
    split gets a val split carved out of train (so the test split is never used for model
    selection). ``by="image"`` splits image by image (only to reproduce a tutorial).
    """
    frame = table.frame.copy()
    if by == "image":
        log.warning(
            "splitting by IMAGE, not by patient: images of one patient can land in "
            "train and test, which inflates held-out results (tutorial reproduction)"
        )
    groups = split_groups(frame, by)
    labels = table.strata
    if not frame["split"].notna().any():
        test_mask = _carve(labels, groups, test, seed)
        frame.loc[test_mask, "split"] = "test"
    if not (frame["split"] == "val").any():
        pool = (frame["split"] == "train").to_numpy() | frame["split"].isna().to_numpy()
        remaining = 1 - (test if frame["split"].isna().all() else 0)
        val_mask = np.zeros(len(frame), dtype=bool)
        val_mask[pool] = _carve(labels[pool], groups[pool], val / remaining, seed + 1)
        frame.loc[val_mask, "split"] = "val"
    frame["split"] = frame["split"].fillna("train")
    return ImageTable(frame, table.class_names, table.source, table.skipped)


def assign_folds(table: ImageTable, k: int, seed: int = 0, by: str = "patient") -> np.ndarray:
    """A fold number (0..k-1) per row for patient-grouped, stratified k-fold cross-validation."""
    groups = split_groups(table.frame, by)
    folds = np.full(len(table), -1, dtype=np.int64)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for fold, (_, held) in enumerate(splitter.split(np.zeros(len(table)), table.strata, groups)):
        folds[held] = fold
    return folds


@dataclass
class LeakageReport:
    """Patients and identical images found in more than one split, and how many images had no
    patient id to check (the summary never claims a patient check it could not make)."""

    patients: dict[str, list[str]] = field(default_factory=dict)  # patient -> splits
    duplicates: dict[str, list[str]] = field(default_factory=dict)  # sha256 -> paths
    n_images: int = 0
    unchecked: int = 0  # images without a patient id

    @property
    def clean(self) -> bool:
        return not self.patients and not self.duplicates

    def _unchecked(self) -> str:
        if self.unchecked == self.n_images:
            return f"patients not checked: none of the {self.n_images} images has a patient id"
        return f"{self.unchecked} of {self.n_images} images have no patient id (not checked)"

    def summary(self) -> str:
        if self.clean and not self.unchecked:
            return "no patient and no identical image appears in more than one split"
        if self.clean:
            checked = (
                "no identical image appears in more than one split"
                if self.unchecked == self.n_images
                else "among the images with a patient id no patient, and no identical image, "
                "appears in more than one split"
            )
            return f"{checked}; {self._unchecked()}"
        parts = []
        if self.patients:
            examples = ", ".join(f"{p} ({'/'.join(s)})" for p, s in list(self.patients.items())[:5])
            parts.append(f"{len(self.patients)} patient(s) in more than one split, e.g. {examples}")
        if self.duplicates:
            examples = "; ".join(" = ".join(p) for p in list(self.duplicates.values())[:3])
            parts.append(
                f"{len(self.duplicates)} identical image(s) in more than one split, e.g. {examples}"
            )
        if self.unchecked:
            parts.append(self._unchecked())
        return "; ".join(parts)


def find_leakage(frame: pd.DataFrame) -> LeakageReport:
    """Which patients and which content hashes occur in more than one split."""
    coverage = patient_coverage(frame)
    report = LeakageReport(n_images=coverage.n_images, unchecked=coverage.without)
    if "patient" in frame:
        known = frame[frame["patient"].notna() & (frame["patient"] != "")]
        for patient, splits in known.groupby("patient")["split"]:
            if splits.nunique() > 1:
                report.patients[str(patient)] = sorted(splits.unique())
    if "sha256" in frame:
        for digest, rows in frame.groupby("sha256"):
            if rows["split"].nunique() > 1:
                report.duplicates[str(digest)] = [
                    f"{p} [{s}]" for p, s in zip(rows["path"], rows["split"], strict=True)
                ]
    return report


def check_leakage(frame: pd.DataFrame, strict: bool = True) -> LeakageReport:
    """Find leakage; raise :class:`LeakageError` when ``strict`` (splits we made), else warn."""
    report = find_leakage(frame)
    if not report.clean:
        if strict:
            raise LeakageError(f"leakage between splits: {report.summary()}")
        log.warning("leakage in the given splits: %s", report.summary())
    return report
