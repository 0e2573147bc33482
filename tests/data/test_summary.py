"""The data summary: images per split and class, patients per split, duplicate groups."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from medsight.data.sources import COLUMNS, ImageTable
from medsight.data.summary import data_summary

# (label, patient, split)
ROWS = [
    ("NORMAL", "p1", "train"),
    ("NORMAL", "p1", "train"),
    ("PNEUMONIA", "p2", "train"),
    ("PNEUMONIA", "p3", "val"),
    ("NORMAL", "p4", "test"),
    ("PNEUMONIA", None, "test"),
    ("PNEUMONIA", "p1", "test"),  # p1 again, in another split
]


def _table(rows, class_names=("NORMAL", "PNEUMONIA"), sha256=None) -> ImageTable:
    records = [(f"/data/{i}.png", *row) for i, row in enumerate(rows)]
    frame = pd.DataFrame(records, columns=COLUMNS)
    if sha256 is not None:
        frame = frame.assign(sha256=sha256)
    return ImageTable(frame, list(class_names), "folder /data")


def _by_split(summary: dict) -> dict[str, dict]:
    return {row["split"]: row for row in summary["splits"]}


def test_counts_per_split_and_class() -> None:
    summary = data_summary(_table(ROWS))
    assert summary["source"] == "folder /data"
    assert summary["class_names"] == ["NORMAL", "PNEUMONIA"]
    assert summary["n_images"] == 7
    assert _by_split(summary) == {
        "test": {"split": "test", "counts": [1, 2], "total": 3, "patients": 2},
        "train": {"split": "train", "counts": [2, 1], "total": 3, "patients": 2},
        "val": {"split": "val", "counts": [0, 1], "total": 1, "patients": 1},
    }
    assert summary["n_patients"] == 4  # p1 counted once though it is in two splits
    assert summary["duplicates"] is None  # not hashed: unknown, not zero
    json.dumps(summary)  # plain numbers, ready for metrics.json


def test_counts_follow_the_class_order_and_list_absent_classes() -> None:
    summary = data_summary(_table(ROWS, class_names=("PNEUMONIA", "COVID", "NORMAL")))
    assert _by_split(summary)["train"]["counts"] == [1, 0, 2]
    assert _by_split(summary)["val"]["counts"] == [1, 0, 0]


def test_rows_without_a_split_are_none() -> None:
    rows = [("NORMAL", "p1", None), ("PNEUMONIA", "p2", None), ("NORMAL", "p3", "test")]
    summary = data_summary(_table(rows))
    assert _by_split(summary) == {
        "(none)": {"split": "(none)", "counts": [1, 1], "total": 2, "patients": 2},
        "test": {"split": "test", "counts": [1, 0], "total": 1, "patients": 1},
    }


def test_a_table_without_any_split_or_patient() -> None:
    rows = [("NORMAL", None, None)] * 3 + [("PNEUMONIA", None, None)]
    summary = data_summary(_table(rows))
    assert summary["splits"] == [{"split": "(none)", "counts": [3, 1], "total": 4, "patients": 0}]
    assert summary["n_patients"] == 0


def test_the_table_itself_is_not_changed() -> None:
    table = _table([("NORMAL", None, None)])
    data_summary(table)
    assert table.frame["split"].isna().all()


@pytest.mark.parametrize(
    ("hashes", "expected"),
    [
        (["a", "b", "c", "d", "e", "f", "g"], {"groups": 0, "files": 0}),
        (["a", "a", "b", "c", "d", "e", "f"], {"groups": 1, "files": 2}),
        (["a", "a", "a", "b", "b", "c", "d"], {"groups": 2, "files": 5}),
        (["a"] * 7, {"groups": 1, "files": 7}),
    ],
)
def test_duplicates_only_when_hashed(hashes: list[str], expected: dict) -> None:
    assert data_summary(_table(ROWS, sha256=hashes))["duplicates"] == expected


def test_images_with_a_patient_id_per_rule_and_without_one() -> None:
    table = _table(ROWS)
    table.frame["patient_source"] = ["filename", "filename", "column", "dicom", "column", None, "x"]
    summary = data_summary(table)
    assert summary["patient_ids"] == {"column": 2, "dicom": 1, "filename": 2, "x": 1}
    assert summary["images_without_patient"] == 1
    json.dumps(summary)
