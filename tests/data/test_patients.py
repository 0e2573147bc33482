"""Patient ids: the file names of the real datasets, the recipe's own rules (a pattern, the
parent folder), hashed DICOM PatientIDs, and what is counted of images without one."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from medsight.config import DataConfig
from medsight.data.patients import (
    DEFAULT_RULE,
    SALT_ENV,
    PatientRule,
    dicom_patient,
    hash_patient_id,
    identify_patients,
    patient_coverage,
    patient_from_filename,
    require_patients,
)
from medsight.data.sources import load_table
from medsight.errors import ConfigError, DataError

CASES = [
    ("C100P61ThinF_IMG_20150918_144104_cell_162.png", "P61"),
    ("C37BP2_thinF_IMG_20150620_131423a_cell_92.png", "P2"),
    ("C12NThinF_IMG_20150614_124212_cell_120.png", "C12"),
    ("C3thin_original_IMG_20150608_162922_cell_28.png", "C3"),
    ("person1000_bacteria_2931.jpeg", "person1000"),
    ("person1261_virus_2147.jpeg", "person1261"),
    ("IM-0115-0001.jpeg", "IM-0115"),
    ("IM-0011-0001-0001.jpeg", "IM-0011"),
    ("NORMAL2-IM-0012-0001.jpeg", "NORMAL2-IM-0012"),
    ("/some/folder/C1_thinF_IMG_x_cell_1.png", "C1"),
    ("scan_0042.png", None),
    ("IMG_20150608.png", None),
]


@pytest.mark.parametrize(("name", "expected"), CASES)
def test_patient_from_filename(name: str, expected: str | None) -> None:
    assert patient_from_filename(name) == expected


def test_every_malaria_file_has_a_patient(malaria_dir: Path) -> None:
    files = sorted(malaria_dir.rglob("*.png"))
    assert len(files) == 8000
    patients = {f: patient_from_filename(f.name) for f in files}
    assert all(patients.values()), [f.name for f, p in patients.items() if not p][:5]
    # the README of the data: 180 patient groups remain after 20 were withheld
    assert len(set(patients.values())) == 180


def test_every_kermany_file_has_a_patient(datasets_dir: Path) -> None:
    files = sorted((datasets_dir / "chest_xray").rglob("*.jpeg"))
    assert len(files) == 5324
    missing = [f.name for f in files if patient_from_filename(f.name) is None]
    assert missing == []


# identify_patients: (rule, path under /data, label, expected patient, expected source)
RULE_CASES = [
    (
        PatientRule(),
        "/data/Parasitized/C100P61ThinF_IMG_1_cell_2.png",
        "Parasitized",
        "P61",
        "filename",
    ),
    (PatientRule(), "/data/Parasitized/img_7.png", "Parasitized", None, None),
    (PatientRule(r"sub-(\d+)"), "/data/NORMAL/sub-042_scan.png", "NORMAL", "042", "pattern"),
    (PatientRule(r"(?P<site>s\d)_(?P<patient>p\d+)"), "/data/A/s1_p9.png", "A", "p9", "pattern"),
    (PatientRule(r"pt\d+"), "/data/A/pt12/x.png", "A", "pt12", "pattern"),  # whole match
    (PatientRule(r"sub-(\d+)"), "/data/NORMAL/other.png", "NORMAL", None, None),
    # searched relative to the data folder: the folder "data" above it never matches
    (PatientRule(r"(data|sub)"), "/data/A/x.png", "A", None, None),
    (
        PatientRule(from_parent=True),
        "/data/NORMAL/patient7/img.png",
        "NORMAL",
        "patient7",
        "parent",
    ),
    (PatientRule(from_parent=True), "/data/train/NORMAL/p3/img.png", "NORMAL", "p3", "parent"),
    (PatientRule(from_parent=True), "/data/NORMAL/img.png", "NORMAL", None, None),  # class folder
    (PatientRule(from_parent=True), "/data/img.png", "NORMAL", None, None),  # the data folder
]


@pytest.mark.parametrize(("rule", "path", "label", "patient", "source"), RULE_CASES)
def test_identify_patients(rule: PatientRule, path: str, label: str, patient, source) -> None:
    other = "/data/A/sub-1_pt1_s1_p1_C1P1thin.png"  # matched by every pattern, so none errs
    frame = pd.DataFrame({"path": [path, other], "label": [label, "A"], "patient": [None, None]})
    if rule.from_parent:
        frame.loc[1, "path"] = "/data/A/p1/x.png"
    found = identify_patients(frame, rule, Path("/data")).astype(object)
    found = found.where(found.notna(), None)
    assert found.loc[0, "patient"] == patient
    assert found.loc[0, "patient_source"] == source


def test_a_sheets_patient_column_wins_over_file_names() -> None:
    frame = pd.DataFrame(
        {"path": ["/d/A/C1P5thin.png", "/d/A/C1P5thin_b.png"], "label": ["A"] * 2,
         "patient": ["subject-9", ""]}
    )  # fmt: skip
    found = identify_patients(frame)
    assert list(found["patient"]) == ["subject-9", "P5"]
    assert list(found["patient_source"]) == ["column", "filename"]


def test_the_recipes_rule_replaces_the_sheets_column() -> None:
    frame = pd.DataFrame({"path": ["/d/A/sub-3.png"], "label": ["A"], "patient": ["x"]})
    found = identify_patients(frame, PatientRule(r"sub-(\d+)"), Path("/d"))
    assert found.loc[0, "patient"] == "3" and found.loc[0, "patient_source"] == "pattern"


def test_a_pattern_that_matches_no_file_is_an_error_naming_it(malaria_renamed: Path) -> None:
    with pytest.raises(
        DataError, match=r"data.patient_pattern 'P\(\\d\+\)' matches none of the 60"
    ):
        load_table(malaria_renamed, patients=PatientRule(r"P(\d+)"))


def test_parent_folders_when_every_image_lies_in_its_class_folder(malaria_renamed: Path) -> None:
    with pytest.raises(DataError, match="expected CLASS/PATIENT/image"):
        load_table(malaria_renamed, patients=PatientRule(from_parent=True))


def test_pattern_and_parent_together_are_refused() -> None:
    with pytest.raises(ConfigError, match="not both"):
        PatientRule("x", from_parent=True)


def test_the_rule_of_a_recipe() -> None:
    cfg = DataConfig(patient_pattern=r"(\d+)")
    assert PatientRule.of(cfg) == PatientRule(r"(\d+)", False)
    assert PatientRule.of(DataConfig(patient_from="parent")) == PatientRule(None, True)
    assert PatientRule.of(DataConfig()) == DEFAULT_RULE


def test_renamed_real_cells_have_no_patient(malaria_renamed: Path) -> None:
    table = load_table(malaria_renamed)
    assert table.frame["patient"].isna().all() and table.frame["patient_source"].isna().all()
    coverage = patient_coverage(table.frame)
    assert coverage.without == 60 and coverage.by_rule == {}
    assert coverage.split_by("patient") == "image"
    assert coverage.note() == "split by image for 60 of 60 images (no patient id)"


def test_hash_is_deterministic_salted_and_hides_the_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SALT_ENV, raising=False)
    key = hash_patient_id("12345")
    assert key == hash_patient_id("12345") != hash_patient_id("12346")
    assert key.startswith("dcm-") and len(key) == 20 and "12345" not in key
    assert hash_patient_id("12345", salt="other") != key
    monkeypatch.setenv(SALT_ENV, "site-secret")
    assert hash_patient_id("12345") == hash_patient_id("12345", salt="site-secret") != key


def test_dicom_files_group_by_their_hashed_patient_id(malaria_dicoms) -> None:
    root, raw_ids = malaria_dicoms
    table = load_table(root)
    frame = table.frame
    assert len(frame) == 24 and set(frame["patient_source"]) == {"dicom"}
    assert set(frame["patient"]) == {hash_patient_id(raw) for raw in raw_ids}
    assert frame.groupby("patient").size().tolist() == [12, 12]
    assert not any(raw in str(value) for raw in raw_ids for value in frame.to_numpy().ravel())


def test_a_dicom_without_patient_id_falls_back_to_its_name(tmp_path: Path) -> None:
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.PatientName = "no id"
    ds.save_as(tmp_path / "C3P7thin_a.dcm", implicit_vr=True, little_endian=True)
    (tmp_path / "broken.dcm").write_bytes(b"not dicom")
    assert dicom_patient(tmp_path / "C3P7thin_a.dcm") is None
    assert dicom_patient(tmp_path / "broken.dcm") is None
    frame = pd.DataFrame({"path": [str(tmp_path / "C3P7thin_a.dcm")], "label": ["A"]})
    assert identify_patients(frame).loc[0, "patient"] == "P7"


# (patients, sources, wish) -> (split_by, note)
COVERAGE_CASES = [
    (["a", "b"], ["filename", "dicom"], "patient", "patient", None),
    (
        ["a", None],
        ["pattern", None],
        "patient",
        "mixed",
        "split by image for 1 of 2 images (no patient id)",
    ),
    (
        [None, None],
        [None, None],
        "patient",
        "image",
        "split by image for 2 of 2 images (no patient id)",
    ),
    (["a", "b"], ["column", "column"], "image", "image", None),
]


@pytest.mark.parametrize(("patients", "sources", "wish", "split_by", "note"), COVERAGE_CASES)
def test_coverage(patients, sources, wish: str, split_by: str, note: str | None) -> None:
    frame = pd.DataFrame({"path": ["x", "y"], "patient": patients, "patient_source": sources})
    coverage = patient_coverage(frame)
    assert coverage.split_by(wish) == split_by
    assert coverage.note() == note


def test_coverage_counts_per_rule_and_tables_without_sources() -> None:
    frame = pd.DataFrame(
        {"path": list("abcd"), "patient": ["p", "q", "", None],
         "patient_source": ["dicom", "filename", None, None]}
    )  # fmt: skip
    coverage = patient_coverage(frame)
    assert coverage.by_rule == {"dicom": 1, "filename": 1} and coverage.without == 2
    assert coverage.text() == "patient ids: 2 of 4 images (DICOM PatientID 1, file name 1)"
    curated = patient_coverage(frame.drop(columns="patient_source"))
    assert curated.by_rule == {"given": 2}


def test_require_patients_names_the_count_and_an_example() -> None:
    frame = pd.DataFrame({"path": ["/d/a.png", "/d/b.png", "/d/c.png"], "patient": ["p", None, ""]})
    with pytest.raises(DataError, match=r"^2 of 3 images have no patient id \(e.g. /d/b.png\)"):
        require_patients(frame)
    require_patients(frame.iloc[:1])  # every image has one: no error
