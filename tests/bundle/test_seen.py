"""What a bundle records of its training images: content hashes and salted patient hashes,
saved beside the bundle, never a patient id in clear; a bundle without the record reads None."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medsight.bundle import BundleSpec, TrainingImages, save_bundle
from medsight.bundle.seen import SEEN_FILE
from medsight.errors import MedsightError
from medsight.models.zoo import create_model

HASHES = ["a" * 64, "b" * 64]
PATIENTS = ["person12", None, "person12", "IM-0007"]


def _record() -> TrainingImages:
    return TrainingImages.record(HASHES, PATIENTS)


def test_save_and_load_give_the_same_record(tmp_path: Path) -> None:
    record = _record()
    record.save(tmp_path)
    assert TrainingImages.load(tmp_path) == record
    assert record.hashes == frozenset(HASHES) and len(record.patients) == 2


def test_patient_ids_are_never_stored_in_clear(tmp_path: Path) -> None:
    text = _record().save(tmp_path).read_text()
    assert "person12" not in text and "IM-0007" not in text
    stored = json.loads(text)
    assert stored["sha256"] == sorted(HASHES) and stored["splits"] == ["train", "val"]
    assert len(stored["patients"]) == 2 and len(stored["patient_salt"]) == 32


def test_each_record_has_its_own_salt() -> None:
    first, second = _record(), _record()
    assert first.salt != second.salt
    assert first.patients.isdisjoint(second.patients)  # hashes cannot be matched across bundles
    assert TrainingImages.record([], PATIENTS, salt="s").patients == (
        TrainingImages.record([], PATIENTS, salt="s").patients
    )


@pytest.mark.parametrize(
    ("patient", "seen"),
    [
        ("person12", True),
        (" person12 ", True),  # the same id, padded in a sheet
        ("IM-0007", True),
        ("person13", False),
        ("PERSON12", False),  # ids are compared exactly
        (None, False),
        (float("nan"), False),  # a missing value in a pandas column
        ("", False),
        ("  ", False),
    ],
)
def test_same_patient(patient: object, seen: bool) -> None:
    assert _record().same_patient([patient]).tolist() == [seen]


def test_same_content_and_seen_combine_both_checks() -> None:
    record = _record()
    hashes = ["a" * 64, "c" * 64, None, "c" * 64]
    patients = [None, None, "person12", "person99"]
    assert record.same_content(hashes).tolist() == [True, False, False, False]
    assert record.seen(hashes, patients).tolist() == [True, False, True, False]
    assert record.seen([], []).dtype == np.bool_


def test_a_folder_without_the_record_reads_none(tmp_path: Path) -> None:
    assert TrainingImages.load(tmp_path) is None


@pytest.mark.parametrize("content", ["{not json", "{}", '{"sha256": 3}'])
def test_a_damaged_record_is_one_clear_error(tmp_path: Path, content: str) -> None:
    (tmp_path / SEEN_FILE).write_text(content)
    with pytest.raises(MedsightError, match=SEEN_FILE):
        TrainingImages.load(tmp_path)


@pytest.mark.parametrize("record", [None, _record()])
def test_save_bundle_writes_the_record_when_given(
    tmp_path: Path, record: TrainingImages | None
) -> None:
    spec = BundleSpec(
        model_name="malaria_lenet",
        class_names=["a", "b"],
        positive_class="b",
        image_size=(64, 64),
        channels=3,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
    )
    model = create_model("malaria_lenet", 2, 3, (64, 64))
    folder = save_bundle(tmp_path / "b", model, spec, training_images=record)
    assert (folder / SEEN_FILE).is_file() == (record is not None)
    assert TrainingImages.load(folder) == record
