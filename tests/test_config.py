"""Recipes: built-ins load, overrides apply with YAML typing, mistakes give clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medsight.config import load_recipe, recipe_names, save_recipe
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
