"""Recipes: built-ins load, overrides apply with YAML typing, mistakes give clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from medsight.config import (
    load_recipe,
    recipe_fields,
    recipe_names,
    recipe_values,
    save_recipe,
    suggest,
)
from medsight.errors import ConfigError


def test_builtin_recipes_validate() -> None:
    assert "malaria-lenet" in recipe_names()
    for name in recipe_names():
        recipe = load_recipe(name)
        assert recipe.name == name and recipe.description


def test_malaria_lenet_is_faithful_to_the_tutorial() -> None:
    recipe = load_recipe("malaria-lenet")
    assert recipe.data.image_size == (128, 128) and recipe.data.channels == 3
    assert recipe.data.split_by == "patient"
    assert recipe.model.name == "malaria_lenet"
    assert recipe.train.optimizer == "adagrad"
    assert (recipe.augment.rotation, recipe.augment.zoom, recipe.augment.hflip) == (20, 0.2, True)
    assert recipe.published is not None and recipe.published.metrics["accuracy"] == 0.90


def test_overrides_are_typed_and_nested() -> None:
    recipe = load_recipe(
        "malaria-lenet",
        ["train.lr=3e-4", "data.limit=50", "augment.hflip=false", "data.image_size=[64, 64]"],
    )
    assert recipe.train.lr == pytest.approx(3e-4)
    assert recipe.data.limit == 50
    assert recipe.augment.hflip is False
    assert recipe.data.image_size == (64, 64)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lr", "not of the form key=value"),
        ("train.lr=-1", "train.lr"),
        ("train.optimiser=adam", "train.optimiser"),
        ("train.optimizer=rmsprop", "train.optimizer"),
        ("data.split_by=slide", "data.split_by"),
    ],
)
def test_bad_overrides_are_rejected_clearly(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_recipe("malaria-lenet", [override])


def test_unknown_recipe_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="malaria-lenet"):
        load_recipe("no-such-recipe")


def test_saved_config_round_trips(tmp_path: Path) -> None:
    recipe = load_recipe("malaria-lenet", ["train.epochs=3"])
    save_recipe(recipe, tmp_path / "config.yaml")
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["train"]["epochs"] == 3
    assert load_recipe(str(tmp_path / "config.yaml")) == recipe


@pytest.mark.parametrize(
    ("override", "suggested"),
    [
        ("train.lrr=1", ["train.lr"]),
        ("trian.lr=1", ["train.lr"]),
        ("data.limt=50", ["data.limit"]),
        ("epochs=3", ["train.epochs", "preprocess.lung_crop.epochs"]),  # a bare field name
        ("batchsize=8", ["train.batch_size"]),
        ("optim.lr=1", ["train.lr"]),
        ("train.lr.x=1", ["train.lr"]),  # a value is not a section
    ],
)
def test_an_unknown_key_names_the_nearest_valid_ones(override: str, suggested: list[str]) -> None:
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=f"'{key}' is not a recipe field") as caught:
        load_recipe("malaria-lenet", [override])
    assert f"did you mean {' or '.join(suggested)}?" in str(caught.value)
    assert suggest(key) == suggested


def test_keys_inside_a_mapping_are_free() -> None:
    recipe = load_recipe("malaria-lenet", ["model.kwargs.drop_rate=0.2"])
    assert recipe.model.kwargs == {"drop_rate": 0.2}


def test_a_typo_in_a_recipe_file_gets_the_same_hint(tmp_path: Path) -> None:
    raw = {"name": "x", "description": "d", "model": {"name": "malaria_lenet"}}
    raw["train"] = {"epoch": 3}
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"'train.epoch' is not a recipe field; did you mean"):
        load_recipe(str(tmp_path / "mine.yaml"))


def test_an_override_inside_a_section_switched_off_says_so(tmp_path: Path) -> None:
    (tmp_path / "off.yaml").write_text(
        "name: off\ndescription: d\nmodel: {name: malaria_lenet}\npreprocess: {lung_crop: null}\n"
    )
    with pytest.raises(ConfigError, match="'lung_crop' is off in this recipe"):
        load_recipe(str(tmp_path / "off.yaml"), ["preprocess.lung_crop.epochs=1"])


def test_recipe_fields_are_every_dotted_key() -> None:
    fields = recipe_fields()
    assert {"train.epochs", "data.limit", "preprocess.lung_crop.epochs", "model.kwargs"} <= set(
        fields
    )
    assert "train" not in fields and "preprocess.lung_crop" not in fields  # sections
    assert len(fields) == len(set(fields))


@pytest.mark.parametrize("name", recipe_names())
def test_recipe_values_give_back_the_recipe_as_overrides(name: str) -> None:
    recipe = load_recipe(name)
    values = recipe_values(recipe)
    assert values["train.epochs"] == recipe.train.epochs
    assert values["data.limit"] is None  # a default the YAML never mentions
    assert set(values) <= set(recipe_fields()) | {"preprocess.lung_crop", "published"}
    overrides = [f"{key}={json.dumps(value)}" for key, value in values.items()]
    assert load_recipe("malaria-lenet", overrides) == recipe


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([], (None, None, False)),
        (["data.patient_pattern=sub-(\\d+)"], ("sub-(\\d+)", None, False)),
        (["data.patient_from=parent", "data.require_patients=true"], (None, "parent", True)),
    ],
)
def test_patient_options(overrides: list[str], expected: tuple) -> None:
    data = load_recipe("malaria-lenet", overrides).data
    assert (data.patient_pattern, data.patient_from, data.require_patients) == expected


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "data.patient_pattern=sub-(",
            "data.patient_pattern: Value error, 'sub-(' is not a regular",
        ),
        ("data.patient_from=grandparent", "data.patient_from: Input should be 'parent'"),
    ],
)
def test_bad_patient_options_are_rejected(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_recipe("malaria-lenet", [override])
