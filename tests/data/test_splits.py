"""Patient-grouped stratified splits, k-fold, and the leakage check, on real malaria files."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medsight.data.io import content_sha256
from medsight.data.patients import PatientRule, patient_from_filename
from medsight.data.sources import ImageTable, load_table
from medsight.data.splits import assign_folds, assign_splits, check_leakage, find_leakage
from medsight.errors import LeakageError


@pytest.fixture(scope="module")
def malaria(malaria_dir: Path) -> ImageTable:
    table = load_table(malaria_dir)
    table.frame["sha256"] = table.frame["path"]  # distinct files: hashing all 8,000 is not needed
    return table


def test_patient_split_is_disjoint_stratified_and_sized(malaria: ImageTable) -> None:
    table = assign_splits(malaria, val=0.1, test=0.2, seed=3)
    frame = table.frame
    patients = {s: set(frame.loc[frame["split"] == s, "patient"]) for s in ("train", "val", "test")}
    assert not patients["train"] & patients["val"]
    assert not patients["train"] & patients["test"]
    assert not patients["val"] & patients["test"]
    sizes = frame["split"].value_counts(normalize=True)
    assert sizes["test"] == pytest.approx(0.2, abs=0.05)
    assert sizes["val"] == pytest.approx(0.1, abs=0.04)
    for split in ("train", "val", "test"):  # both classes in every split, roughly balanced
        share = (frame.loc[frame["split"] == split, "label"] == "Parasitized").mean()
        assert 0.35 < share < 0.65
    assert find_leakage(frame).clean


def test_split_is_reproducible_and_seed_dependent(malaria: ImageTable) -> None:
    a = assign_splits(malaria, seed=1).frame["split"]
    b = assign_splits(malaria, seed=1).frame["split"]
    c = assign_splits(malaria, seed=2).frame["split"]
    assert a.equals(b)
    assert not a.equals(c)


def test_given_splits_are_kept_and_val_is_carved_from_train(datasets_dir: Path) -> None:
    table = load_table(datasets_dir / "chest_xray")
    table.frame["sha256"] = table.frame["path"]
    split = assign_splits(table, val=0.1, seed=0).frame
    original = table.frame["split"]
    assert (split.loc[original == "test", "split"] == "test").all()
    assert set(split.loc[original == "train", "split"]) == {"train", "val"}
    train_patients = set(split.loc[split["split"] == "train", "patient"])
    assert not train_patients & set(split.loc[split["split"] == "val", "patient"])


def test_kfold_is_patient_disjoint(malaria: ImageTable) -> None:
    folds = assign_folds(malaria, k=5, seed=0)
    assert set(folds) == {0, 1, 2, 3, 4}
    owner = pd.DataFrame({"patient": malaria.frame["patient"], "fold": folds})
    assert (owner.groupby("patient")["fold"].nunique() == 1).all()


def _planted(malaria_subset: Path, tmp_path: Path) -> ImageTable:
    """A copy of the subset where one image also appears under a second name."""
    root = tmp_path / "data"
    shutil.copytree(malaria_subset, root, symlinks=False)
    source = sorted((root / "Parasitized").glob("*.png"))[0]
    shutil.copy(source, root / "Parasitized" / "copy_of_cell.png")  # no patient in its name
    table = load_table(root)
    table.frame["sha256"] = [content_sha256(p) for p in table.frame["path"]]
    return table


def test_identical_images_always_land_in_one_split(malaria_subset: Path, tmp_path: Path) -> None:
    table = _planted(malaria_subset, tmp_path)
    for seed in range(5):
        frame = assign_splits(table, val=0.2, test=0.2, seed=seed).frame
        copies = frame[
            frame["sha256"]
            == frame.loc[frame["path"].str.endswith("copy_of_cell.png"), "sha256"].iloc[0]
        ]
        assert len(copies) == 2 and copies["split"].nunique() == 1


def test_leakage_check_catches_a_planted_duplicate(malaria_subset: Path, tmp_path: Path) -> None:
    frame = assign_splits(_planted(malaria_subset, tmp_path), seed=0).frame
    copy = frame["path"].str.endswith("copy_of_cell.png")
    other = frame["sha256"].eq(frame.loc[copy, "sha256"].iloc[0]) & ~copy
    frame.loc[copy, "split"] = "test"
    frame.loc[other, "split"] = "train"
    with pytest.raises(LeakageError, match="identical image"):
        check_leakage(frame)


def test_leakage_check_catches_a_patient_in_two_splits(malaria: ImageTable, caplog) -> None:
    frame = assign_splits(malaria, seed=0).frame
    patient = frame.loc[frame["split"] == "train", "patient"].iloc[0]
    rows = np.flatnonzero(frame["patient"] == patient)
    frame.loc[rows[0], "split"] = "test"
    with pytest.raises(LeakageError, match=f"{patient} \\(test/train\\)"):
        check_leakage(frame)
    with caplog.at_level(logging.WARNING):  # given splits: reported, not fatal
        report = check_leakage(frame, strict=False)
    assert list(report.patients) == [patient]
    assert "leakage in the given splits" in caplog.text


def test_image_level_split_is_possible_but_warned(malaria: ImageTable, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        frame = assign_splits(malaria, seed=0, by="image").frame
    assert "splitting by IMAGE" in caplog.text
    assert find_leakage(frame).patients  # patients do cross splits at image level


def _relaid(subset: Path, root: Path, layout: str) -> dict[str, str]:
    """The real cells of ``subset`` under neutral names, their patient (from the original file
    name) kept only in the layout: ``parent`` (CLASS/PATIENT/img_N.png) or ``pattern``
    (CLASS/img_N_pt-PATIENT.png). Returns each new path's true patient."""
    truth = {}
    for number, file in enumerate(sorted(subset.rglob("*.png"))):
        patient = patient_from_filename(file.name)
        if layout == "parent":
            target = root / file.parent.name / patient / f"img_{number}.png"
        else:
            target = root / file.parent.name / f"img_{number}_pt-{patient}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(file.resolve())
        truth[str(target)] = patient
    return truth


@pytest.mark.parametrize(
    ("layout", "rule"),
    [("parent", PatientRule(from_parent=True)), ("pattern", PatientRule(r"_pt-(?P<patient>\w+)"))],
)
def test_the_recipes_rule_groups_real_cells_by_patient(
    malaria_subset: Path, tmp_path: Path, layout: str, rule: PatientRule
) -> None:
    truth = _relaid(malaria_subset, tmp_path / "data", layout)
    assert load_table(tmp_path / "data").frame["patient"].isna().all()  # names hide them
    table = load_table(tmp_path / "data", patients=rule)
    frame = table.frame.assign(sha256=table.frame["path"])
    assert dict(zip(frame["path"], frame["patient"], strict=True)) == truth
    assert set(frame["patient_source"]) == {layout}
    frame = assign_splits(ImageTable(frame, table.class_names, table.source), seed=1).frame
    splits_per_patient = frame.groupby("patient")["split"].nunique()
    assert len(splits_per_patient) > 20 and (splits_per_patient == 1).all()
    assert set(frame["split"]) == {"train", "val", "test"}
    assert find_leakage(frame).summary() == (
        "no patient and no identical image appears in more than one split"
    )


# (patients, splits) -> the leakage summary: it never claims a check it could not make
SUMMARY_CASES = [
    (
        ["a", "b"], ["train", "test"],
        "no patient and no identical image appears in more than one split",
    ),
    (
        [None, None], ["train", "test"],
        "no identical image appears in more than one split; patients not checked: none of the "
        "2 images has a patient id",
    ),
    (
        ["a", None], ["train", "test"],
        "among the images with a patient id no patient, and no identical image, appears in more "
        "than one split; 1 of 2 images have no patient id (not checked)",
    ),
    (
        ["a", "a", None], ["train", "test", "test"],
        "1 patient(s) in more than one split, e.g. a (test/train); 1 of 3 images have no "
        "patient id (not checked)",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("patients", "splits", "expected"), SUMMARY_CASES)
def test_leakage_summary_counts_images_without_patient(patients, splits, expected: str) -> None:
    frame = pd.DataFrame(
        {"path": [f"/d/{i}.png" for i in range(len(patients))], "patient": patients,
         "split": splits, "sha256": [str(i) for i in range(len(patients))]}
    )  # fmt: skip
    assert find_leakage(frame).summary() == expected
