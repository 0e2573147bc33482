"""The Python API and the lazy re-exports of ``medsight``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import medsight
from medsight import api
from medsight.config import load_recipe, recipe_names
from medsight.errors import ConfigError
from medsight.evaluation.labelled import LabelledData

FIGURES = ("accuracy", "sensitivity", "specificity", "roc_auc", "pr_auc", "brier", "mcc")


@pytest.fixture(scope="module")
def kermany_renamed(chest_xray_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 + 6 real Kermany test images in class folders named as another site names them."""
    root = tmp_path_factory.mktemp("external")
    for source, target in (("NORMAL", "healthy"), ("PNEUMONIA", "sick")):
        (root / target).mkdir()
        for file in sorted((chest_xray_dir / "test" / source).glob("*.jpeg"))[::9][:6]:
            shutil.copy(file, root / target / file.name)
    return root


@pytest.mark.parametrize("name", [n for n in medsight.__all__ if n != "__version__"])
def test_every_exported_name_is_the_api_function(name: str) -> None:
    assert getattr(medsight, name) is getattr(api, name)
    assert callable(getattr(medsight, name))


def test_version_is_a_plain_attribute() -> None:
    assert "__version__" in medsight.__all__
    assert isinstance(medsight.__version__, str) and medsight.__version__.count(".") == 2


def test_star_import_gives_every_name() -> None:
    namespace: dict = {}
    exec("from medsight import *", namespace)
    for name in medsight.__all__:
        assert name in namespace, name
    assert namespace["evaluate"] is api.evaluate


def test_unknown_attributes_are_attribute_errors() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        medsight.nope  # noqa: B018
    assert not hasattr(medsight, "load_recipe")  # api's imports are not re-exported


def test_importing_medsight_does_not_import_torch() -> None:
    code = (
        "import sys, medsight; "
        "heavy = sorted(m for m in ('torch', 'lightning', 'timm', 'medsight.api') "
        "if m in sys.modules); "
        "print(','.join(heavy) or 'none'); "
        "medsight.list_recipes; "
        "print('medsight.api' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    first, second = result.stdout.split()
    assert first == "none"
    assert second == "True"  # the first use imports the API


def test_list_recipes_has_every_built_in_recipe() -> None:
    recipes = api.list_recipes()
    assert list(recipes) == recipe_names()
    expected = {
        "covid",
        "covid-resnet50",
        "covid-scratch",
        "covid-vgg16",
        "malaria",
        "malaria-lenet",
        "pneumonia",
        "pneumonia-cnn",
    }
    assert expected <= set(recipes)
    for name, about in recipes.items():
        assert about == load_recipe(name).description and about.strip(), name
    assert recipes["malaria-lenet"].startswith("Tutorial (a)")


def test_evaluate_takes_labelled_data_in_place_of_a_path(
    xray_bundle: Path, kermany_renamed: Path, tmp_path: Path
) -> None:
    class_map = {"healthy": "NORMAL", "sick": "PNEUMONIA"}
    by_keywords = api.evaluate(
        xray_bundle, kermany_renamed, tmp_path / "a", class_map=class_map, resamples=20
    )
    labelled = LabelledData((str(kermany_renamed),), class_map=class_map)
    by_value = api.evaluate(xray_bundle, labelled, tmp_path / "b", resamples=20)
    assert by_value["n"] == by_keywords["n"] == 12
    assert by_value["counts"] == {"NORMAL": 6, "PNEUMONIA": 6}
    for key in FIGURES:
        assert by_value[key] == by_keywords[key], key
        assert by_value["figures"][key] == by_keywords["figures"][key], key
    assert by_value["confusion_matrix"] == by_keywords["confusion_matrix"]
    assert by_value["class_map"] == class_map
    a = (tmp_path / "a" / "predictions.csv").read_text()
    assert a == (tmp_path / "b" / "predictions.csv").read_text()
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["n"] == 12


def test_labelled_data_says_everything_and_the_keywords_are_ignored(
    xray_bundle: Path, kermany_renamed: Path, tmp_path: Path
) -> None:
    labelled = LabelledData(
        (str(kermany_renamed),), class_map={"sick": "PNEUMONIA"}, drop_unknown=True
    )
    metrics = api.evaluate(xray_bundle, labelled, tmp_path, class_map=None, resamples=20)
    assert metrics["n"] == 6 and metrics["counts"] == {"NORMAL": 0, "PNEUMONIA": 6}


def test_show_recipe_applies_overrides_and_refuses_unknown_keys() -> None:
    shown = api.show_recipe("malaria-lenet", ["train.epochs=3", "data.limit=50"])
    assert shown["train.epochs"] == 3 and shown["data.limit"] == 50
    assert shown["train.optimizer"] == load_recipe("malaria-lenet").train.optimizer
    with pytest.raises(ConfigError, match="did you mean train.lr"):
        api.show_recipe("malaria-lenet", ["train.lrr=1"])
    with pytest.raises(ConfigError, match="did you mean train.lr"):
        api.train("malaria-lenet", ".", "unused", overrides=["train.lrr=1"])
