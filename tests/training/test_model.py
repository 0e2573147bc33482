"""The model a run trains, and the spec it is bundled with: its input pipeline comes from its
starting weights."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from medsight.bundle import BundleSpec, save_bundle
from medsight.config import load_recipe
from medsight.errors import MedsightError
from medsight.models.zoo import create_model
from medsight.training.model import build_model


def _source_bundle(folder: Path, exposure: str) -> Path:
    spec = BundleSpec(
        model_name="malaria_lenet",
        class_names=["a", "b"],
        image_size=(64, 64),
        channels=3,
        mean=(0.1, 0.2, 0.3),
        std=(0.4, 0.5, 0.6),
        exposure=exposure,
    )
    return save_bundle(folder, create_model("malaria_lenet", 2, 3, (64, 64)), spec)


def test_without_weights_the_recipe_decides() -> None:
    recipe = load_recipe("malaria-lenet", ["preprocess.exposure=equalize"])
    _, spec = build_model(recipe, ["Parasitized", "Uninfected"], "Parasitized")
    assert spec.exposure == "equalize"
    assert (spec.mean, spec.std) == (recipe.preprocess.mean, recipe.preprocess.std)
    assert spec.task == "binary" and spec.image_size == recipe.data.image_size
    assert (spec.model_name, spec.recipe, spec.tta) == ("malaria_lenet", "malaria-lenet", False)


def test_a_bundle_brings_its_exposure_and_normalisation(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = _source_bundle(tmp_path / "source", "equalize")
    recipe = load_recipe(
        "malaria-lenet",
        [f"model.pretrained={source}", "preprocess.exposure=none", "data.image_size=[64, 64]"],
    )
    with caplog.at_level(logging.WARNING, logger="medsight.training.model"):
        model, spec = build_model(recipe, ["x", "y", "z"])
    assert spec.exposure == "equalize" and spec.task == "multiclass"
    assert (spec.mean, spec.std) == ((0.1, 0.2, 0.3), (0.4, 0.5, 0.6))
    assert model.classifier[-1].out_features == 3
    assert "preprocess.exposure=equalize" in caplog.text and str(source) in caplog.text


def test_a_bundle_that_agrees_with_the_recipe_raises_no_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = _source_bundle(tmp_path / "source", "none")
    recipe = load_recipe(
        "malaria-lenet", [f"model.pretrained={source}", "data.image_size=[64, 64]"]
    )
    with caplog.at_level(logging.WARNING, logger="medsight.training.model"):
        _, spec = build_model(recipe, ["a", "b"])
    assert spec.exposure == "none" and caplog.text == ""


def test_a_folder_that_is_not_a_bundle_is_named(tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    recipe = load_recipe("malaria-lenet", [f"model.pretrained={tmp_path / 'weights'}"])
    with pytest.raises(MedsightError, match="not a medsight bundle"):
        build_model(recipe, ["a", "b"])


def test_a_bundle_of_another_architecture_says_which_to_use(tmp_path: Path) -> None:
    source = _source_bundle(tmp_path / "source", "none")
    recipe = load_recipe("pneumonia-cnn", [f"model.pretrained={source}"])
    with pytest.raises(MedsightError, match="model.name=malaria_lenet"):
        build_model(recipe, ["a", "b"])
