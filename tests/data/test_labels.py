"""Labels from file paths (data.label_pattern): Kermany's pneumonia subtypes from its names."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from medsight.data.labels import LabelRule
from medsight.data.sources import ImageTable, load_table
from medsight.errors import ConfigError, DataError

KERMANY = LabelRule(
    r"person\d+_(?P<label>bacteria|virus)_", {"bacteria": "BACTERIAL", "virus": "VIRAL"}
)


def _table(paths: list[str], labels: list[str]) -> ImageTable:
    frame = pd.DataFrame({"path": paths, "label": labels, "patient": None, "split": None})
    return ImageTable(frame, sorted(set(labels)), "test table")


def test_kermany_subtypes_come_from_the_file_names(chest_xray_dir: Path) -> None:
    table = KERMANY.apply(load_table(chest_xray_dir / "test"))
    assert table.class_names == ["NORMAL", "BACTERIAL", "VIRAL"]
    counts = table.frame["label"].value_counts().to_dict()
    assert counts == {"NORMAL": 234, "BACTERIAL": 242, "VIRAL": 148}
    viral = table.frame.loc[table.frame["label"] == "VIRAL", "path"]
    assert viral.str.contains("_virus_").all()
    assert (
        table.labels == table.frame["label"].map({"NORMAL": 0, "BACTERIAL": 1, "VIRAL": 2})
    ).all()


def test_unmatched_images_keep_their_label_and_groups_are_optional() -> None:
    table = _table(["a/cat_1.png", "a/dog_2.png", "b/x.png"], ["pets", "pets", "other"])
    whole = LabelRule(r"cat|dog").apply(table)  # no group: the whole match
    assert list(whole.frame["label"]) == ["cat", "dog", "other"]
    assert whole.class_names == ["other", "cat", "dog"]
    first = LabelRule(r"/(\w+)_\d").apply(table)  # unnamed group: the first
    assert list(first.frame["label"]) == ["cat", "dog", "other"]
    assert LabelRule().apply(table) is table


def test_a_pattern_that_matches_nothing_or_is_broken_is_refused() -> None:
    table = _table(["a/1.png", "a/2.png"], ["x", "x"])
    with pytest.raises(DataError, match="matches none of its 2 image paths"):
        KERMANY.apply(table)
    with pytest.raises(ConfigError, match="not a regular expression"):
        LabelRule("person(")
    with pytest.raises(ConfigError, match="set both"):
        LabelRule(None, {"a": "b"})


def test_the_recipe_field_is_validated() -> None:
    from medsight.config import load_recipe

    recipe = load_recipe("pneumonia-type")
    assert LabelRule.of(recipe.data) == KERMANY
    with pytest.raises(ConfigError, match="regular expression"):
        load_recipe("pneumonia-type", ["data.label_pattern=person("])
