"""The input pipeline a run trains and serves with comes from its starting weights."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from medsight.config import load_recipe
from medsight.models.zoo import create_model
from medsight.serving.bundle import BundleSpec, save_bundle
from medsight.training.fit import build_model


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
    _, pipeline = build_model(recipe, 2)
    assert pipeline.exposure == "equalize"
    assert (pipeline.mean, pipeline.std) == (recipe.preprocess.mean, recipe.preprocess.std)


def test_a_bundle_brings_its_exposure_and_normalisation(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = _source_bundle(tmp_path / "source", "equalize")
    recipe = load_recipe(
        "malaria-lenet",
        [f"model.pretrained={source}", "preprocess.exposure=none", "data.image_size=[64, 64]"],
    )
    with caplog.at_level(logging.WARNING, logger="medsight.training.fit"):
        _, pipeline = build_model(recipe, 3)
    assert pipeline.exposure == "equalize"
    assert (pipeline.mean, pipeline.std) == ((0.1, 0.2, 0.3), (0.4, 0.5, 0.6))
    assert "preprocess.exposure=equalize" in caplog.text and str(source) in caplog.text


def test_a_bundle_that_agrees_with_the_recipe_raises_no_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = _source_bundle(tmp_path / "source", "none")
    recipe = load_recipe(
        "malaria-lenet", [f"model.pretrained={source}", "data.image_size=[64, 64]"]
    )
    with caplog.at_level(logging.WARNING, logger="medsight.training.fit"):
        _, pipeline = build_model(recipe, 2)
    assert pipeline.exposure == "none" and caplog.text == ""
