"""Data a model cannot learn from is refused with one line that names the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medsight.data.sources import COLUMNS, ImageTable
from medsight.data.trainable import (
    MIN_PER_CLASS,
    check_classes,
    check_fold_classes,
    check_split_classes,
    folder_hint,
    load_trainable,
)
from medsight.errors import DataError


def _table(counts: dict[str, int], splits: dict[str, list[str]] | None = None) -> ImageTable:
    """A table with ``counts`` images per class; ``splits`` gives each class's split per row."""
    rows = []
    for name, n in counts.items():
        for i in range(n):
            split = splits[name][i] if splits else None
            rows.append((f"/x/{name}/{i}.png", name, f"{name}-{i}", split))
    return ImageTable(pd.DataFrame(rows, columns=COLUMNS), sorted(counts), "folder /x")


def _touch(folder: Path, names: list[str]) -> None:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"not decoded here")


@pytest.mark.parametrize(
    ("counts", "limit", "message"),
    [
        ({"Parasitized": 300}, None, r"only one class has images \(Parasitized: 300\)"),
        ({"Parasitized": 300, "Uninfected": 0}, None, "Uninfected: 0"),
        ({"a": 40, "b": 3}, None, "class 'b' has only 3 image"),
        ({"a": 40, "b": 4}, 44, r"raise data.limit \(now 44\)"),
        ({"a": 40}, 40, "raise data.limit"),
    ],
)
def test_too_few_classes_or_images_are_refused(
    counts: dict[str, int], limit: int | None, message: str
) -> None:
    with pytest.raises(DataError, match=message):
        check_classes(_table(counts), limit)


def test_enough_images_of_two_classes_pass() -> None:
    check_classes(_table({"a": MIN_PER_CLASS, "b": 100}))


@pytest.mark.parametrize(
    ("b_splits", "given", "limit", "message"),
    [
        (
            ["train"] * 5,
            frozenset(),
            None,
            r"val split has no 'b' images \(a: 2, b: 0; its 5 image\(s\) come from 5 .*val_fr",
        ),
        (["train"] * 4 + ["val"], frozenset(), None, r"test split has no 'b'.*data.test_fraction"),
        (["train"] * 4 + ["val"], frozenset({"test"}), None, "to the data's own test split"),
        (["train"] * 4 + ["val"], frozenset({"test"}), 12, r"or raise data.limit \(now 12\)"),
        (["val"] * 4 + ["test"], frozenset(), None, "train split has no 'b'"),
    ],
)
def test_a_split_without_a_class_is_refused(
    b_splits: list[str], given: frozenset[str], limit: int | None, message: str
) -> None:
    splits = {"a": ["train"] * 4 + ["val", "val", "test"], "b": b_splits}
    with pytest.raises(DataError, match=message):
        check_split_classes(_table({"a": 7, "b": 5}, splits), given, limit)


def test_an_empty_val_split_is_refused() -> None:
    splits = {"a": ["train"] * 5, "b": ["train"] * 5}
    with pytest.raises(DataError, match="val split is empty"):
        check_split_classes(_table({"a": 5, "b": 5}, splits))


def test_splits_with_every_class_pass_and_a_missing_test_split_is_fine() -> None:
    splits = {"a": ["train"] * 4 + ["val"], "b": ["train"] * 4 + ["val"]}
    check_split_classes(_table({"a": 5, "b": 5}, splits))


def test_a_fold_without_a_class_is_refused() -> None:
    table = _table({"a": 6, "b": 6})
    fold_of = np.array([0, 1, 2] * 2 + [0, 1] * 3)  # class b never in fold 2
    with pytest.raises(DataError, match=r"fold 2 of 3 has no 'b' images.*fewer folds"):
        check_fold_classes(table, fold_of)
    check_fold_classes(table, np.array([0, 1, 2] * 4))


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (["metadata.csv", "images/a.png", "images/b.png"], "--recipe covid"),
        (["pneumoniamnist.npz"], r"pass the .npz itself \(--data .*pneumoniamnist.npz\)"),
        (["site-a/pneumoniamnist.npz", "site-b/pneumoniamnist.npz"], "site-a/pneumoniamnist.npz"),
    ],
)
def test_a_sheet_or_npz_folder_points_to_the_right_way_in(
    tmp_path: Path, files: list[str], message: str
) -> None:
    _touch(tmp_path, files)
    with pytest.raises(DataError, match=message):
        load_trainable(tmp_path)


def test_class_folders_beside_a_metadata_csv_still_load(tmp_path: Path) -> None:
    _touch(tmp_path, ["metadata.csv", "NORMAL/a.png", "PNEUMONIA/b.png"])
    assert folder_hint(tmp_path) is not None
    assert load_trainable(tmp_path).class_names == ["NORMAL", "PNEUMONIA"]


def test_the_covid_folder_given_as_class_folders(datasets_dir: Path) -> None:
    with pytest.raises(DataError, match="metadata.csv.*data.curation=covid-vs-normal"):
        load_trainable(datasets_dir / "covid")
