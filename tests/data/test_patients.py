"""Patient ids parsed from the file names of the real datasets."""

from __future__ import annotations

from pathlib import Path

import pytest

from medsight.data.patients import patient_from_filename

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
