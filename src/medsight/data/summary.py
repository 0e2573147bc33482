"""Counts per split and class, patients per split and where their ids came from: the data
summary of ``data inspect``, the report and ``metrics.json``."""

from __future__ import annotations

from typing import Any

import pandas as pd

from medsight.data.patients import patient_coverage
from medsight.data.sources import ImageTable


def data_summary(table: ImageTable) -> dict[str, Any]:
    """Images per split and class, patients per split, images with a patient id per rule (and
    without one), and (for a hashed table) the groups of byte-identical files."""
    frame = table.frame.assign(split=table.frame["split"].fillna("(none)"))
    if table.multi_label:  # images with each label (an image may have several, or none)
        with_label = pd.DataFrame(table.targets == 1, columns=table.class_names)
        counts = with_label.groupby(frame["split"].to_numpy()).sum()
        totals = frame.groupby("split").size()
    else:
        counts = pd.crosstab(frame["split"], frame["label"]).reindex(
            columns=table.class_names, fill_value=0
        )
        totals = counts.sum(axis=1)
    patients = frame[frame["patient"].notna()].groupby("split")["patient"].nunique()
    duplicates = None  # groups of byte-identical files, when the table was hashed
    if "sha256" in frame:
        sizes = frame.groupby("sha256").size()
        duplicates = {"groups": int((sizes > 1).sum()), "files": int(sizes[sizes > 1].sum())}
    coverage = patient_coverage(table.frame)
    return {
        "source": table.source,
        "splits": [
            {
                "split": s,
                "counts": [int(counts.loc[s, c]) for c in table.class_names],
                "total": int(totals.loc[s]),
                "patients": int(patients.get(s, 0)),
            }
            for s in counts.index
        ],
        "class_names": table.class_names,
        "multi_label": table.multi_label,  # counts: images with each label
        "n_images": len(frame),
        "n_patients": int(frame["patient"].nunique()),
        "patient_ids": coverage.by_rule,  # rule -> images with an id from it
        "images_without_patient": coverage.without,
        "duplicates": duplicates,
    }
