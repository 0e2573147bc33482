"""``data inspect`` on small class-folder trees made here: counts, sizes, modes, duplicates,
unreadable files and leakage between given splits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medsight.data.inspect import inspect_data
from medsight.data.io import UNRECOGNISED
from medsight.data.patients import PatientRule


def _png(path: Path, size: tuple[int, int], mode: str, seed: int) -> Path:
    """A PNG of ``size`` (width, height) in ``mode`` with seeded content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    shape = (height, width) if mode == "L" else (height, width, 3)
    pixels = np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)
    Image.fromarray(pixels, mode).save(path)
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """NORMAL: three 8x8 grey PNGs, two of them byte-identical; PNEUMONIA: two 16x12 RGB PNGs,
    a file that is no image and an empty one."""
    root = tmp_path / "data"
    a = _png(root / "NORMAL" / "a.png", (8, 8), "L", 0)
    shutil.copyfile(a, root / "NORMAL" / "b.png")
    _png(root / "NORMAL" / "e.png", (8, 8), "L", 1)
    _png(root / "PNEUMONIA" / "c.png", (16, 12), "RGB", 2)
    _png(root / "PNEUMONIA" / "d.png", (16, 12), "RGB", 3)
    (root / "PNEUMONIA" / "broken.png").write_bytes(b"this is not a PNG")
    (root / "PNEUMONIA" / "empty.png").write_bytes(b"")
    (root / "PNEUMONIA" / "notes.txt").write_text("not an image suffix: not listed")
    return root


def test_counts_sizes_modes(tree: Path) -> None:
    found = inspect_data(tree)
    assert found.source == f"folder {tree}"
    summary = found.summary
    assert summary["class_names"] == ["NORMAL", "PNEUMONIA"]
    assert summary["n_images"] == 7 and summary["n_patients"] == 0
    assert summary["splits"] == [{"split": "(none)", "counts": [3, 4], "total": 7, "patients": 0}]
    assert dict(found.sizes) == {(8, 8): 3, (16, 12): 2}  # (width, height)
    assert dict(found.modes) == {"L": 3, "RGB": 2}


def test_duplicates_and_unreadable_files(tree: Path) -> None:
    found = inspect_data(tree)
    assert found.duplicates == [[str(tree / "NORMAL" / "a.png"), str(tree / "NORMAL" / "b.png")]]
    assert sorted(found.unreadable) == [
        (
            str(tree / "PNEUMONIA" / "broken.png"),
            UNRECOGNISED,
        ),
        (str(tree / "PNEUMONIA" / "empty.png"), "empty file (0 bytes)"),
    ]
    assert found.leakage == ""  # no splits given: nothing to check


@pytest.mark.parametrize("threads", [1, 4])
def test_threads_do_not_change_the_findings(tree: Path, threads: int) -> None:
    one, many = inspect_data(tree, threads=1), inspect_data(tree, threads=threads)
    assert one.sizes == many.sizes and one.modes == many.modes
    assert one.duplicates == many.duplicates
    assert sorted(one.unreadable) == sorted(many.unreadable)


def test_text_has_the_tables(tree: Path) -> None:
    text = inspect_data(tree).text()
    lines = text.splitlines()
    assert lines[0] == f"source: folder {tree}"
    assert lines[1].split() == ["images:", "7", "patient", "groups:", "0"]
    header = next(line for line in lines if line.startswith("split"))
    assert header.split() == ["split", "NORMAL", "PNEUMONIA", "total", "patients"]
    row = lines[lines.index(header) + 1]
    assert row.split() == ["(none)", "3", "4", "7", "0"]
    # the counts sit right-aligned under their class names
    assert header.index("NORMAL") + len("NORMAL") == row.index("3") + 1
    assert (
        "image sizes: 2 distinct, width 8-16, height 8-12; most common: 8x8 (3), 16x12 (2)" in lines
    )
    assert "modes: L (3), RGB (2)" in lines
    dupes = lines.index("exact duplicates: 1 group(s)")
    assert lines[dupes + 1] == f"  {tree / 'NORMAL' / 'a.png'} = {tree / 'NORMAL' / 'b.png'}"
    unreadable = lines.index("unreadable files: 2")
    assert sorted(lines[unreadable + 1 : unreadable + 3]) == [
        f"  {tree / 'PNEUMONIA' / 'broken.png'}: {UNRECOGNISED}",
        f"  {tree / 'PNEUMONIA' / 'empty.png'}: empty file (0 bytes)",
    ]
    assert "leakage" not in text


def test_to_dict_is_json(tree: Path) -> None:
    found = inspect_data(tree)
    data = json.loads(json.dumps(found.to_dict()))
    assert data["source"] == f"folder {tree}"
    assert data["sizes"] == {"8x8": 3, "16x12": 2}
    assert list(data["sizes"]) == ["8x8", "16x12"]  # most common first
    assert data["modes"] == {"L": 3, "RGB": 2}
    assert data["duplicates"] == [[str(tree / "NORMAL" / "a.png"), str(tree / "NORMAL" / "b.png")]]
    assert sorted(u["reason"] for u in data["unreadable"]) == [
        "empty file (0 bytes)",
        UNRECOGNISED,
    ]
    assert data["n_images"] == 7 and data["class_names"] == ["NORMAL", "PNEUMONIA"]
    assert data["splits"][0]["counts"] == [3, 4]
    assert data["leakage"] == ""


def test_a_large_class_name_widens_the_table(tmp_path: Path) -> None:
    _png(tmp_path / "a_very_long_class_name" / "x.png", (4, 4), "L", 0)
    _png(tmp_path / "b" / "y.png", (4, 4), "RGB", 1)
    text = inspect_data(tmp_path).text()
    header = next(line for line in text.splitlines() if line.startswith("split"))
    row = next(line for line in text.splitlines() if line.startswith("(none)"))
    name = "a_very_long_class_name"
    assert header.index(name) + len(name) == row.index("1") + 1


def _split_tree(root: Path, leak: bool) -> Path:
    _png(root / "train" / "NORMAL" / "person1_a.png", (8, 8), "L", 0)
    _png(root / "train" / "PNEUMONIA" / "person2_b.png", (8, 8), "L", 1)
    _png(root / "test" / "PNEUMONIA" / "person3_c.png", (8, 8), "L", 2)
    other = "person1_d.png" if leak else "person4_d.png"  # person1 again: in both splits
    _png(root / "test" / "NORMAL" / other, (8, 8), "L", 3)
    return root


def test_a_patient_in_train_and_test_is_leakage(tmp_path: Path) -> None:
    found = inspect_data(_split_tree(tmp_path / "data", leak=True))
    assert found.leakage == "1 patient(s) in more than one split, e.g. person1 (test/train)"
    assert [row["split"] for row in found.summary["splits"]] == ["test", "train"]
    assert [row["patients"] for row in found.summary["splits"]] == [2, 2]
    assert found.summary["n_patients"] == 3
    assert found.text().splitlines()[-1] == f"leakage between given splits: {found.leakage}"


def test_an_identical_image_in_train_and_test_is_leakage(tmp_path: Path) -> None:
    root = _split_tree(tmp_path / "data", leak=False)
    shutil.copyfile(root / "train" / "NORMAL" / "person1_a.png", root / "test" / "NORMAL" / "x.png")
    found = inspect_data(root)
    assert "1 identical image(s) in more than one split" in found.leakage
    assert "patient(s)" not in found.leakage
    assert len(found.duplicates) == 1


def test_clean_splits_say_so(tmp_path: Path) -> None:
    found = inspect_data(_split_tree(tmp_path / "data", leak=False))
    assert found.leakage == "no patient and no identical image appears in more than one split"
    assert found.to_dict()["leakage"] == found.leakage


@pytest.mark.skipif(not Path("/proc/self/mem").is_file(), reason="needs Linux /proc")
def test_files_that_cannot_be_read_are_not_identical_images(tmp_path: Path) -> None:
    root = _split_tree(tmp_path / "data", leak=False)
    # regular files whose every read fails (EIO), readable to no one, root included
    (root / "train" / "NORMAL" / "x.png").symlink_to("/proc/self/mem")
    (root / "test" / "NORMAL" / "y.png").symlink_to("/proc/self/mem")
    found = inspect_data(root)
    assert len(found.unreadable) == 2 and found.duplicates == []
    # x.png and y.png carry no patient id: the check says so instead of claiming them clean
    assert found.leakage == (
        "among the images with a patient id no patient, and no identical image, appears in "
        "more than one split; 2 of 6 images have no patient id (not checked)"
    )


def test_renamed_real_cells_are_reported_without_patient(malaria_renamed: Path) -> None:
    found = inspect_data(malaria_renamed)
    assert found.summary["patient_ids"] == {} and found.summary["images_without_patient"] == 60
    assert (
        "patient ids: 0 of 60 images; a training would split by image for 60 of 60 images "
        "(no patient id)"
    ) in found.text().splitlines()


def test_a_recipes_rule_can_be_tried_before_training(malaria_renamed: Path) -> None:
    found = inspect_data(malaria_renamed, patients=PatientRule(r"img_(\d+)"))
    assert "patient ids: 60 of 60 images (data.patient_pattern 60)" in found.text().splitlines()
    assert found.summary["n_patients"] == 60


def test_dicom_patients_are_counted_and_never_shown_in_clear(malaria_dicoms) -> None:
    root, raw_ids = malaria_dicoms
    found = inspect_data(root)
    text, as_json = found.text(), json.dumps(found.to_dict())
    assert "patient ids: 24 of 24 images (DICOM PatientID 24)" in text.splitlines()
    assert found.summary["n_patients"] == 2 and found.unreadable == []
    assert not any(raw in text or raw in as_json for raw in raw_ids)
