"""Multi-label sheets (data/multilabel.py through data/sources.py): NIH-style '|' lists and
CheXpert-style columns, with missing labels kept missing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medsight.data.multilabel import MultiLabelRule, strata, summary_labels
from medsight.data.sources import load_table
from medsight.data.splits import assign_splits
from medsight.errors import DataError


def _images(folder: Path, n: int) -> list[str]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        Image.new("L", (8, 8), i % 255).save(folder / f"x{i}.png")
        names.append(f"x{i}.png")
    return names


def _sheet(tmp_path: Path, columns: dict[str, list[str]]) -> Path:
    n = len(next(iter(columns.values())))
    csv = tmp_path / "sheet.csv"
    pd.DataFrame({"path": _images(tmp_path, n), **columns}).to_csv(csv, index=False)
    return csv


def test_pipe_lists_give_one_column_per_finding(tmp_path: Path) -> None:
    cells = ["Effusion|Mass", "No Finding", "Mass", "Effusion", "Atelectasis|Effusion"]
    table = load_table(_sheet(tmp_path, {"Finding Labels": cells}), multi=MultiLabelRule(labels=[]))
    assert table.multi_label and table.class_names == ["Atelectasis", "Effusion", "Mass"]
    assert table.targets.tolist() == [
        [0, 1, 1],
        [0, 0, 0],
        [0, 0, 1],
        [0, 1, 0],
        [1, 1, 0],
    ]
    assert list(table.frame["label"]) == [
        "Effusion|Mass",
        "No Finding",
        "Mass",
        "Effusion",
        "Atelectasis|Effusion",
    ]


def test_pipe_lists_keep_only_the_chosen_labels(tmp_path: Path) -> None:
    table = load_table(
        _sheet(tmp_path, {"label": ["Effusion|Mass", "Mass", "Hernia"]}),
        multi=MultiLabelRule(labels=["Mass", "Effusion"]),
    )
    assert table.class_names == ["Mass", "Effusion"]
    # a finding not asked for leaves the row a negative of the others
    assert table.targets.tolist() == [[1, 1], [1, 0], [0, 0]]


def test_columns_keep_missing_apart_from_negative(tmp_path: Path) -> None:
    csv = _sheet(tmp_path, {"Edema": ["1.0", "0.0", "", "-1.0"], "Mass": ["0", "1", "1", ""]})
    for policy, uncertain in (("ignore", np.nan), ("zeros", 0.0), ("ones", 1.0)):
        table = load_table(csv, multi=MultiLabelRule(labels=["Edema", "Mass"], uncertain=policy))
        targets = table.targets
        assert targets[0].tolist() == [1, 0] and targets[1].tolist() == [0, 1]
        assert np.isnan(targets[2, 0]) and targets[2, 1] == 1  # empty: not recorded
        assert np.isnan(targets[3, 1])
        if np.isnan(uncertain):
            assert np.isnan(targets[3, 0])
        else:
            assert targets[3, 0] == uncertain


def test_a_bad_finding_value_names_the_line(tmp_path: Path) -> None:
    csv = _sheet(tmp_path, {"Edema": ["1", "yes"], "Mass": ["0", "1"]})
    with pytest.raises(DataError, match=r"line 3: column 'Edema' holds 'yes'"):
        load_table(csv, multi=MultiLabelRule(labels=["Edema", "Mass"]))


def test_some_label_columns_but_not_all_is_refused(tmp_path: Path) -> None:
    csv = _sheet(tmp_path, {"label": ["Edema", "Mass"], "Edema": ["1", "0"]})
    with pytest.raises(DataError, match=r"has columns for \['Edema'\] but not for \['Mass'\]"):
        load_table(csv, multi=MultiLabelRule(labels=["Edema", "Mass"]))


def test_a_pipe_list_without_the_multi_label_setting_is_refused(tmp_path: Path) -> None:
    csv = _sheet(tmp_path, {"label": ["Edema|Mass", "Mass"]})
    with pytest.raises(DataError, match="data.multi_label=true"):
        load_table(csv)


def test_a_folder_cannot_be_multi_label(tmp_path: Path) -> None:
    _images(tmp_path / "A", 2)
    with pytest.raises(DataError, match="multi-label task reads a CSV"):
        load_table(tmp_path, multi=MultiLabelRule())


def test_a_splits_csv_reads_back_as_written(tmp_path: Path) -> None:
    """A run's splits.csv keeps the label:<name> columns: evaluate reads it with the rule."""
    csv = _sheet(tmp_path, {"Edema": ["1", "0", ""], "Mass": ["0", "1", "1"]})
    rule = MultiLabelRule(labels=["Edema", "Mass"])
    table = load_table(csv, multi=rule)
    again = tmp_path / "splits.csv"
    table.frame.to_csv(again, index=False)
    back = load_table(again, multi=rule)
    assert np.array_equal(back.targets, table.targets, equal_nan=True)


def test_strata_take_the_rarest_present_finding() -> None:
    nan = np.nan
    targets = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0], [1, nan, 1], [1, 0, 0]], np.float32)
    # positives per label: 4, 1, 1 -> rarest present: label 1 for row 0, label 2 for row 3
    assert strata(targets).tolist() == [1, 0, 3, 2, 0]
    assert summary_labels(targets, ["a", "b", "c"])[3] == "a|c"


def test_patient_splits_spread_a_rare_finding(tmp_path: Path) -> None:
    """Stratifying on the rarest finding gives every split some of a 10 % finding."""
    n = 200
    rare = ["Mass" if i % 10 == 0 else "Effusion" for i in range(n)]
    csv = _sheet(tmp_path, {"label": rare, "patient": [f"p{i}" for i in range(n)]})
    table = load_table(csv, multi=MultiLabelRule())
    split = assign_splits(table, 0.15, 0.15, seed=0).frame
    mass = table.class_names.index("Mass")
    for name in ("train", "val", "test"):
        rows = table.targets[(split["split"] == name).to_numpy()]
        assert (rows[:, mass] == 1).sum() >= 2, name


def test_inspect_counts_images_with_each_label(tmp_path: Path) -> None:
    from medsight import api

    csv = _sheet(tmp_path, {"label": ["Edema|Mass", "Mass", "No Finding", "Edema"]})
    found = api.inspect(csv, multi_label=True)
    assert found.summary["multi_label"] and found.summary["class_names"] == ["Edema", "Mass"]
    assert found.summary["splits"][0]["counts"] == [2, 2]  # images with it, not exact labels
    assert found.summary["splits"][0]["total"] == 4
    assert "images with each label" in found.text()
