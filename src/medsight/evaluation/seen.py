"""Has the model seen these images? Figures on images a model trained or tuned on are
optimistic, so ``evaluate``, ``compare`` and ``audit`` count them, say so, and with
``--exclude-seen`` leave them out.

An image counts as seen when its bytes are those of a training or validation image, or when its
patient is one of theirs (another image of the same lungs is not an independent test). A
bundle that records nothing (saved before bundles did) gives "unknown", never 0.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medsight.bundle import TrainingImages, bundle_folder
from medsight.data.io import content_sha256
from medsight.data.sources import ImageTable
from medsight.errors import DataError, MedsightError, UnreadableImageError

log = logging.getLogger(__name__)
SEEN_COLUMN = "seen_in_training"  # per image: "content", "patient", "" (not seen) or None
ADVICE = "pass --exclude-seen (API: exclude_seen=True) to score only the others"


def hashed(table: ImageTable) -> ImageTable:
    """The table with each file's SHA-256, unless it already carries them (an unreadable file
    gets None; decoding names it later)."""
    if "sha256" in table.frame:
        return table
    frame = table.frame.assign(sha256=[_sha256(p) for p in table.frame["path"]])
    return ImageTable(frame, table.class_names, table.source, table.skipped)


def _sha256(path: str) -> str | None:
    try:
        return content_sha256(path)
    except UnreadableImageError:
        return None


def mark_seen(
    table: ImageTable, bundle: str | Path, column: str = SEEN_COLUMN, exclude: bool = False
) -> ImageTable:
    """The table, hashed, with ``column`` saying per image how ``bundle`` saw it; logs what it
    found. ``exclude`` (the images will be left out) refuses a bundle that records nothing."""
    record = TrainingImages.load(bundle_folder(bundle))
    if record is None:
        unknown = (
            f"{bundle} records no training images (saved by an older medsight), so whether "
            f"these {len(table)} images include ones it was trained or tuned on is unknown"
        )
        if exclude:
            raise MedsightError(
                f"--exclude-seen: {unknown}; evaluate on data known to be held out "
                "(e.g. RUN/splits.csv with --split test) or retrain to record them"
            )
        log.warning("%s", unknown)
        return ImageTable(
            table.frame.assign(**{column: None}), table.class_names, table.source, table.skipped
        )
    table = hashed(table)
    content = record.same_content(table.frame["sha256"])
    patient = record.same_patient(table.frame["patient"]) & ~content
    how = np.where(content, "content", np.where(patient, "patient", ""))
    frame = table.frame.assign(**{column: how})
    seen = int(content.sum() + patient.sum())
    if seen:
        example = frame.loc[how != "", "path"].iloc[0]
        log.warning(
            "%d of %d images were seen by %s in training or validation (%d identical files, "
            "%d other images of its patients; e.g. %s): figures on them are optimistic%s",
            seen,
            len(frame),
            bundle,
            content.sum(),
            patient.sum(),
            example,
            "" if exclude else f"; {ADVICE}",
        )
    return ImageTable(frame, table.class_names, table.source, table.skipped)


def leave_out_seen(table: ImageTable, columns: list[str]) -> tuple[ImageTable, int]:
    """The images no bundle saw (by the ``columns`` of :func:`mark_seen`), and how many were
    left out; leaving out all of them is an error."""
    seen = np.zeros(len(table), dtype=bool)
    for column in columns:
        seen |= table.frame[column].fillna("").astype(str).ne("").to_numpy()
    if seen.all():
        raise DataError(
            f"--exclude-seen: all {len(table)} images were seen in training or validation, "
            "so none is left to score; evaluate on held-out data (e.g. RUN/splits.csv with "
            "--split test)"
        )
    if seen.any():
        log.warning(
            "--exclude-seen: left out %d of %d images seen in training or validation; "
            "scoring the other %d",
            seen.sum(),
            len(table),
            (~seen).sum(),
        )
    return table.select(~seen), int(seen.sum())


def check_seen(
    table: ImageTable, bundles: Mapping[str, str | Path], exclude: bool
) -> tuple[ImageTable, int]:
    """Mark the images each bundle saw (one column per bundle: ``{column: bundle}``) and,
    with ``exclude``, leave them out; returns the table and how many were left out."""
    for column, bundle in bundles.items():
        table = mark_seen(table, bundle, column, exclude)
    if not exclude:
        return table, 0
    return leave_out_seen(table, list(bundles))


def seen_count(frame: pd.DataFrame, column: str = SEEN_COLUMN) -> int | None:
    """How many rows were seen in training; None when unknown (not checked, or the bundle
    records nothing)."""
    if column not in frame or frame[column].isna().any():
        return None
    return int(frame[column].ne("").sum())


def seen_facts(frame: pd.DataFrame, excluded: int = 0) -> dict[str, Any]:
    """``seen_in_training`` (the count among the scored images, null when unknown), what made
    them seen, and how many ``--exclude-seen`` left out."""
    count = seen_count(frame)
    how = None
    if count is not None:
        how = {k: int(frame[SEEN_COLUMN].eq(k).sum()) for k in ("content", "patient")}
    return {"seen_in_training": count, "seen": {"by": how, "excluded": excluded}}
