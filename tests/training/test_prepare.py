"""Which class is the disease (positive) class of a binary task."""

from __future__ import annotations

import pytest

from medsight.errors import ConfigError
from medsight.training.prepare import positive_class


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
