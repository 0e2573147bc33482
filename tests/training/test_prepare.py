"""Which class is the disease (positive) class of a binary task; what the split says of
images without a patient id."""

from __future__ import annotations

from pathlib import Path

import pytest

from medsight.config import Recipe, load_recipe
from medsight.data.patients import PatientRule
from medsight.data.sources import ImageTable, load_table
from medsight.errors import ConfigError, DataError
from medsight.training.prepare import positive_class, split_table


@pytest.mark.parametrize(
    ("classes", "configured", "expected"),
    [
        (["Parasitized", "Uninfected"], None, "Parasitized"),
        (["NORMAL", "PNEUMONIA"], None, "PNEUMONIA"),
        (["COVID-19", "normal"], None, "COVID-19"),
        (["COVID-19", "No Finding"], None, "COVID-19"),
        (["benign", "malignant"], None, "malignant"),
        (["a", "b"], None, "b"),  # no hint in the names: the second class
        (["NORMAL", "PNEUMONIA"], "NORMAL", "NORMAL"),  # the recipe decides
        (["a", "b", "c"], None, None),  # multi-class: no positive class
    ],
)
def test_positive_class(classes: list[str], configured: str | None, expected: str | None) -> None:
    assert positive_class(classes, configured) == expected


def test_unknown_configured_class_is_an_error() -> None:
    with pytest.raises(ConfigError, match="'COVID-19' is not among"):
        positive_class(["NORMAL", "PNEUMONIA"], "COVID-19")


def _renamed(malaria_renamed: Path, overrides: list[str]) -> tuple[Recipe, ImageTable]:
    table = load_table(malaria_renamed)
    table.frame["sha256"] = table.frame["path"]
    return load_recipe("malaria-lenet", overrides), table


def test_require_patients_refuses_images_without_one(malaria_renamed: Path) -> None:
    recipe, table = _renamed(malaria_renamed, ["data.require_patients=true"])
    with pytest.raises(DataError, match=r"60 of 60 images have no patient id \(e\.g\. /.*img_0"):
        split_table(recipe, table)


@pytest.mark.parametrize(
    ("overrides", "warning"),
    [
        ([], "split by image for 60 of 60 images (no patient id): those images' patients"),
        (["data.split_by=image"], "split by IMAGE, as the tutorial did"),
        (["data.patient_pattern=img_(\\d+)"], None),  # every image has an id now
    ],
)
def test_the_split_warning_says_what_was_split_by_image(
    malaria_renamed: Path, overrides: list[str], warning: str | None
) -> None:
    recipe, table = _renamed(malaria_renamed, overrides)
    if recipe.data.patient_pattern:
        table = load_table(malaria_renamed, patients=PatientRule.of(recipe.data))
        table.frame["sha256"] = table.frame["path"]
    _, found = split_table(recipe, table)
    if warning is None:
        assert found is None
    else:
        assert found is not None and found.startswith(warning)
