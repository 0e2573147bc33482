"""Data sources on real data: class folders, split folders, CSV sheets and MedMNIST files."""

from __future__ import annotations

from pathlib import Path

import pytest

from medsight.data.patients import PatientRule
from medsight.data.sources import load_table
from medsight.errors import DataError


def test_malaria_folder_counts_and_classes(malaria_dir: Path) -> None:
    table = load_table(malaria_dir)
    assert table.class_names == ["Parasitized", "Uninfected"]
    assert len(table) == 8000
    assert table.frame["label"].value_counts().to_dict() == {
        "Parasitized": 4000,
        "Uninfected": 4000,
    }
    assert table.frame["patient"].notna().all()
    assert not table.has_splits
    assert set(table.labels) == {0, 1}


def test_kermany_split_folders_are_respected(datasets_dir: Path) -> None:
    table = load_table(datasets_dir / "chest_xray")
    assert table.class_names == ["NORMAL", "PNEUMONIA"]
    counts = table.frame.groupby(["split", "label"]).size().to_dict()
    assert counts == {
        ("test", "NORMAL"): 234,
        ("test", "PNEUMONIA"): 390,
        ("train", "NORMAL"): 1091,
        ("train", "PNEUMONIA"): 3609,
    }
    # a split folder given directly is a plain class-folder tree
    test_only = load_table(datasets_dir / "chest_xray" / "test")
    assert len(test_only) == 624 and not test_only.has_splits


def test_csv_source_resolves_paths_and_skips_missing_files(
    malaria_subset: Path, tmp_path: Path
) -> None:
    files = sorted(malaria_subset.rglob("*.png"))[:4]
    sheet = tmp_path / "sheet.csv"
    lines = ["filename,Finding,PatientID,split"]
    lines += [
        f"{f},{f.parent.name},pat{i},{'train' if i < 2 else 'test'}" for i, f in enumerate(files)
    ]
    lines.append("does-not-exist.png,Parasitized,p9,train")
    sheet.write_text("\n".join(lines) + "\n")
    table = load_table(sheet)
    assert len(table) == 4
    assert list(table.frame["patient"]) == ["pat0", "pat1", "pat2", "pat3"]
    assert set(table.frame["patient_source"]) == {"column"}
    assert list(table.frame["split"]) == ["train", "train", "test", "test"]
    assert len(table.skipped) == 1
    assert "does-not-exist.png" in table.skipped[0][0]
    assert "does not exist" in table.skipped[0][1]


def test_csv_relative_paths_are_relative_to_the_sheet(malaria_subset: Path) -> None:
    sheet = malaria_subset / "labels.csv"
    sheet.write_text(
        "path,label\nParasitized/"
        + sorted(p.name for p in (malaria_subset / "Parasitized").iterdir())[0]
        + ",Parasitized\n"
    )
    try:
        table = load_table(sheet)
        assert Path(table.frame["path"][0]).is_file()
        assert table.frame["patient"][0] is not None  # parsed from the file name
        assert table.frame["patient_source"][0] == "filename"
    finally:
        sheet.unlink()


def test_medmnist_npz_source(datasets_dir: Path) -> None:
    npz = datasets_dir / "medmnist" / "varun19424_pneumonia_mnist" / "pneumoniamnist.npz"
    table = load_table(npz, class_names=["normal", "pneumonia"])
    counts = table.frame.groupby(["split", "label"]).size().to_dict()
    assert counts[("test", "normal")] == 234 and counts[("test", "pneumonia")] == 390
    assert counts[("val", "normal")] == 135 and counts[("train", "normal")] == 388
    assert table.frame["path"][0].startswith(str(npz) + "::train_images/")
    assert table.frame["patient"].isna().all() and table.frame["patient_source"].isna().all()


def test_a_sheet_takes_the_recipes_patient_rule(malaria_renamed: Path, tmp_path: Path) -> None:
    files = sorted(malaria_renamed.rglob("*.png"))
    sheet = tmp_path / "sheet.csv"
    rows = [f"{f},{f.parent.name},{f.stem.replace('img_', 'case')}" for f in files]
    sheet.write_text("path,label,subject\n" + "\n".join(rows) + "\n")
    table = load_table(sheet, patients=PatientRule(r"img_(\d+)"))
    assert set(table.frame["patient_source"]) == {"pattern"}
    assert table.frame["patient"].tolist() == [f.stem.removeprefix("img_") for f in files]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing", "no such file or folder"),
        (lambda d: (d / "a.txt").write_text("x") and d / "a.txt", "unsupported data source"),
        (
            lambda d: (d / "s.csv").write_text("file,foo\na.png,1\n") and d / "s.csv",
            "no column named any of label",
        ),
        (lambda d: (d / "empty").mkdir() or d / "empty", "one sub-folder per class"),
    ],
)
def test_bad_sources_give_clear_errors(tmp_path: Path, make, message: str) -> None:
    path = make(tmp_path)
    with pytest.raises(DataError, match=message) as info:
        load_table(path)
    assert str(path) in str(info.value)


def test_relative_data_paths_become_absolute(malaria_subset: Path, monkeypatch) -> None:
    """splits.csv must stay usable from any folder, so table paths are absolute."""
    monkeypatch.chdir(malaria_subset.parent)
    table = load_table(Path(malaria_subset.name))
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in table.frame["path"])


def test_the_ieee8023_metadata_sheet_is_readable_as_it_is(datasets_dir: Path) -> None:
    sheet = datasets_dir / "covid" / "metadata.csv"
    if not sheet.is_file():
        pytest.skip(f"{sheet} not found")
    table = load_table(sheet)
    assert "COVID-19" in table.class_names
    assert all(Path(p).is_file() for p in table.frame["path"])  # folder + filename joined
    assert all("/images/" in p for p in table.frame["path"])
    assert table.skipped  # rows whose image is not in this snapshot are listed, not fatal


def test_a_source_column_is_kept(malaria_subset: Path, tmp_path: Path) -> None:
    files = sorted(malaria_subset.glob("*/*.png"))[:4]
    sheet = tmp_path / "sheet.csv"
    rows = [f"{f},{f.parent.name},{'site-a' if i % 2 else 'site-b'}" for i, f in enumerate(files)]
    sheet.write_text("path,label,hospital\n" + "\n".join(rows) + "\n")
    table = load_table(sheet)
    assert list(table.frame["source"]) == ["site-b", "site-a", "site-b", "site-a"]
