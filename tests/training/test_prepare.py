"""Which class is the disease (positive) class of a binary task; data that cannot be learnt
from is refused before it is decoded; what the split says of images without a patient id."""

from __future__ import annotations

from pathlib import Path

import pytest

from medsight.config import Recipe, load_recipe
from medsight.data.patients import PatientRule
from medsight.data.sources import ImageTable, load_table
from medsight.errors import ConfigError, DataError
from medsight.training import prepare as prepare_module
from medsight.training.prepare import hashed_table, positive_class, prepare, split_table


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


def _folder(root: Path, counts: dict[str, int], patients: int | None = None) -> Path:
    """Class folders of distinct files named like NIH cells (``C1P<patient>_<i>.png``); they
    are not images, so any attempt to decode them would fail the run instead of the check."""
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            patient = i % patients if patients else f"{name}{i}"
            (root / name / f"C1P{patient}_{name}_{i}.png").write_text(f"{name} {i}")
    return root


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def decode(*args: object, **kwargs: object) -> None:
        raise AssertionError("images were decoded before the data was checked")

    monkeypatch.setattr(prepare_module, "StoreDecode", decode)


@pytest.mark.parametrize(
    ("counts", "overrides", "message"),
    [
        ({"Parasitized": 40}, [], "only one class has images"),
        ({"Parasitized": 40, "Uninfected": 3}, [], "class 'Uninfected' has only 3"),
        # data.limit=30 keeps 2 of the 8: what would be trained on is what is checked
        ({"Parasitized": 112, "Uninfected": 8}, ["data.limit=30"], r"data.limit \(now 30\)"),
    ],
)
def test_hashed_table_refuses_before_hashing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    counts: dict[str, int],
    overrides: list[str],
    message: str,
) -> None:
    monkeypatch.setattr(prepare_module, "content_sha256", lambda p: pytest.fail("hashed"))
    data = _folder(tmp_path / "data", counts)
    with pytest.raises(DataError, match=message):
        hashed_table(load_recipe("malaria-lenet", overrides), data)


@pytest.mark.filterwarnings("ignore:The least populated class")
def test_a_class_of_one_patient_cannot_be_in_every_split(tmp_path: Path, no_decoding) -> None:
    data = _folder(tmp_path / "data", {"Parasitized": 60, "Uninfected": 6}, patients=None)
    for file in (data / "Uninfected").iterdir():  # all six cells from one patient
        file.rename(file.with_name("C9P99_" + file.name.split("_", 1)[1]))
    with pytest.raises(DataError, match=r"split has no 'Uninfected' .* from 1 patient\(s\)"):
        prepare(load_recipe("malaria-lenet"), data, tmp_path / "run", write=False)


def test_the_covid_folder_given_to_the_malaria_recipe(
    datasets_dir: Path, tmp_path: Path, no_decoding
) -> None:
    with pytest.raises(DataError, match=r"metadata.csv.*--recipe covid"):
        prepare(load_recipe("malaria-lenet"), datasets_dir / "covid", tmp_path, write=False)


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
