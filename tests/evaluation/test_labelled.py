"""Labelled data for evaluate/compare/audit: class maps, class alignment, splits, sources."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medsight.data.sources import COLUMNS, ImageTable
from medsight.errors import DataError
from medsight.evaluation.labelled import LabelledData, align_classes, parse_class_map


def _png(path: Path, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4), value, dtype=np.uint8)).save(path)
    return path


def _tree(root: Path, layout: dict[str, int]) -> Path:
    """``{"train/NORMAL": 2, ...}``: that many tiny PNGs in each folder."""
    for folder, n in layout.items():
        for i in range(n):
            _png(root / folder / f"img{i}.png", i)
    return root


def _table(labels: list[str], source: str = "csv sheet.csv") -> ImageTable:
    rows = [(f"/x/{i}.png", label, None, None) for i, label in enumerate(labels)]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return ImageTable(frame, sorted(set(labels)), source, [("/x/gone.png", "missing")])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, {}),
        ("", {}),
        (",", {}),
        ("a=b", {"a": "b"}),
        ("COVID-19=COVID,No Finding=normal", {"COVID-19": "COVID", "No Finding": "normal"}),
        (
            "  COVID-19 = COVID ,  No Finding=normal  ",
            {"COVID-19": "COVID", "No Finding": "normal"},
        ),
        ("a=b,,c=d,", {"a": "b", "c": "d"}),  # empty items are ignored
        ("a=b=c", {"a": "b=c"}),  # only the first '=' separates
        ("a=x,a=y", {"a": "y"}),  # a repeated class: the last pair wins
    ],
)
def test_parse_class_map(text: str | None, expected: dict[str, str]) -> None:
    assert parse_class_map(text) == expected


@pytest.mark.parametrize("text", ["a", "a=b,c", "=b", "a=", " = ", "a=b, =c", "a=b,c= "])
def test_parse_class_map_errors_quote_the_text(text: str) -> None:
    with pytest.raises(DataError, match="DATA_CLASS=MODEL_CLASS") as info:
        parse_class_map(text)
    assert repr(text) in str(info.value)


def test_align_renames_and_indexes_like_the_model() -> None:
    table = _table(["COVID-19", "No Finding", "COVID-19"])
    aligned = align_classes(
        table, ["normal", "COVID"], {"COVID-19": "COVID", "No Finding": "normal"}
    )
    assert aligned.class_names == ["normal", "COVID"]
    assert aligned.frame["label"].tolist() == ["COVID", "normal", "COVID"]
    assert aligned.labels.tolist() == [1, 0, 1]
    assert aligned.source == table.source and aligned.skipped == table.skipped
    assert table.frame["label"].tolist() == ["COVID-19", "No Finding", "COVID-19"]  # untouched


def test_align_without_a_map_keeps_known_labels() -> None:
    aligned = align_classes(_table(["b", "a"]), ["a", "b", "c"])
    assert aligned.labels.tolist() == [1, 0] and aligned.class_names == ["a", "b", "c"]


def test_a_map_that_swaps_two_names_swaps_them() -> None:
    aligned = align_classes(_table(["x", "y", "y"]), ["x", "y"], {"x": "y", "y": "x"})
    assert aligned.frame["label"].tolist() == ["y", "x", "x"]


def test_several_data_classes_may_map_onto_one() -> None:
    aligned = align_classes(
        _table(["viral", "bacterial", "normal"]),
        ["normal", "pneumonia"],
        {"viral": "pneumonia", "bacterial": "pneumonia"},
    )
    assert aligned.labels.tolist() == [1, 1, 0]


def test_unknown_classes_are_an_error_naming_them() -> None:
    table = _table(["normal", "Tuberculosis", "COVID-19", "normal"], source="csv meta.csv")
    with pytest.raises(DataError) as info:
        align_classes(table, ["normal", "COVID"])
    message = str(info.value)
    assert message.startswith("csv meta.csv: classes ['COVID-19', 'Tuberculosis'] are not known")
    assert "['normal', 'COVID']" in message
    assert "--class-map" in message and "--drop-unknown-classes" in message


def test_unknown_classes_are_dropped_when_asked() -> None:
    table = _table(["normal", "Tuberculosis", "COVID-19", "normal"])
    aligned = align_classes(table, ["normal", "COVID"], {"COVID-19": "COVID"}, drop_unknown=True)
    assert aligned.frame["label"].tolist() == ["normal", "COVID", "normal"]
    assert aligned.frame["path"].tolist() == ["/x/0.png", "/x/2.png", "/x/3.png"]
    assert aligned.frame.index.tolist() == [0, 1, 2]  # re-indexed from 0


def test_nothing_left_after_dropping_is_an_error() -> None:
    with pytest.raises(DataError, match="no images of the model's classes"):
        align_classes(_table(["Tuberculosis"]), ["normal", "COVID"], drop_unknown=True)


def test_a_map_onto_classes_the_model_lacks_is_an_error_naming_them() -> None:
    with pytest.raises(DataError) as info:
        align_classes(_table(["a"]), ["normal", "COVID"], {"a": "covid", "b": "Normal"})
    assert "class map targets ['Normal', 'covid'] are not classes of the model" in str(info.value)
    assert "['normal', 'COVID']" in str(info.value)


def test_of_keeps_an_instance_as_it_is() -> None:
    data = LabelledData(("a", "b"), "test", {"x": "y"}, True)
    assert LabelledData.of(data) is data
    with pytest.raises(DataError, match="not both"):  # never silently dropped
        LabelledData.of(data, split="val")


@pytest.mark.parametrize(
    ("given", "paths"),
    [
        ("data/xray", ("data/xray",)),
        (Path("data/xray"), ("data/xray",)),
        (["a", Path("b/c")], ("a", "b/c")),
        (("a.csv",), ("a.csv",)),
    ],
)
def test_of_wraps_paths_as_strings(given, paths: tuple[str, ...]) -> None:
    data = LabelledData.of(given, split="test", class_map={"a": "b"}, drop_unknown=True)
    assert data.paths == paths and all(isinstance(p, str) for p in data.paths)
    assert data.split == "test" and data.class_map == {"a": "b"} and data.drop_unknown


def test_of_defaults() -> None:
    data = LabelledData.of("x")
    assert data.split is None and data.class_map == {} and data.drop_unknown is False


@pytest.mark.parametrize(
    ("paths", "name"), [(["a"], "a"), (["a", "b/c"], "a + b/c"), (["x", "y", "z"], "x + y + z")]
)
def test_name_joins_the_paths(paths: list[str], name: str) -> None:
    assert LabelledData.of(paths).name == name


def test_load_one_folder(tmp_path: Path) -> None:
    root = _tree(tmp_path / "data", {"NORMAL": 2, "PNEUMONIA": 3})
    table = LabelledData.of(root).load(["PNEUMONIA", "NORMAL"])
    assert table.class_names == ["PNEUMONIA", "NORMAL"]
    assert sorted(table.labels.tolist()) == [0, 0, 0, 1, 1]
    assert "source" not in table.frame  # one path: no source column is made up


def test_load_keeps_one_split(tmp_path: Path) -> None:
    root = _tree(
        tmp_path / "data",
        {"train/NORMAL": 3, "train/PNEUMONIA": 2, "test/NORMAL": 1, "test/PNEUMONIA": 2},
    )
    table = LabelledData.of(root, split="test").load(["NORMAL", "PNEUMONIA"])
    assert len(table) == 3 and set(table.frame["split"]) == {"test"}
    assert table.labels.tolist() == [0, 1, 1]


@pytest.mark.parametrize(
    ("layout", "present"),
    [
        ({"train/NORMAL": 1, "test/NORMAL": 1}, "['test', 'train']"),
        ({"NORMAL": 1}, "[]"),  # no split folders at all
    ],
)
def test_a_split_that_is_absent_names_the_present_ones(
    tmp_path: Path, layout: dict, present: str
) -> None:
    root = _tree(tmp_path / "data", layout)
    with pytest.raises(DataError) as info:
        LabelledData.of(root, split="val").load(["NORMAL"])
    assert f"no images in split 'val' (splits present: {present})" in str(info.value)
    assert str(root) in str(info.value)


def test_load_applies_the_class_map_and_drop(tmp_path: Path) -> None:
    root = _tree(tmp_path / "data", {"COVID-19": 2, "No Finding": 1, "Tuberculosis": 1})
    data = LabelledData.of(
        root, class_map={"COVID-19": "COVID", "No Finding": "normal"}, drop_unknown=True
    )
    table = data.load(["normal", "COVID"])
    assert sorted(table.frame["label"]) == ["COVID", "COVID", "normal"]
    with pytest.raises(DataError, match="Tuberculosis"):
        LabelledData.of(root, class_map=data.class_map).load(["normal", "COVID"])


def test_several_paths_get_a_source_column(tmp_path: Path) -> None:
    first = _tree(tmp_path / "hospital_a", {"NORMAL": 2, "PNEUMONIA": 1})
    _png(tmp_path / "sheet" / "p.png", 7)
    sheet = tmp_path / "sheet" / "hospital_b.csv"
    sheet.write_text("path,label\np.png,PNEUMONIA\ngone.png,NORMAL\n")
    table = LabelledData.of([first, sheet]).load(["NORMAL", "PNEUMONIA"])
    assert table.frame["source"].tolist() == ["hospital_a"] * 3 + ["hospital_b.csv"]
    assert table.frame.index.tolist() == [0, 1, 2, 3]
    assert table.labels.tolist() == [0, 0, 1, 1]
    assert table.source == f"folder {first} + csv {sheet}"
    assert [Path(p).name for p, _ in table.skipped] == ["gone.png"]  # the sheet's missing file
    assert table.class_names == ["NORMAL", "PNEUMONIA"]


def test_several_paths_each_keep_their_split(tmp_path: Path) -> None:
    a = _tree(tmp_path / "a", {"train/NORMAL": 2, "test/NORMAL": 1})
    b = _tree(tmp_path / "b", {"train/NORMAL": 1, "test/NORMAL": 2})
    table = LabelledData.of([a, b], split="test").load(["NORMAL"])
    assert table.frame["source"].tolist() == ["a", "b", "b"]
    c = _tree(tmp_path / "c", {"NORMAL": 1})  # no split folders: its path is named
    with pytest.raises(DataError, match=f"^{c}: no images in split 'test'"):
        LabelledData.of([a, c], split="test").load(["NORMAL"])
