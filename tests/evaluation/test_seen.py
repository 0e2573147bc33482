"""Scoring a bundle on images it trained on is flagged: real Kermany X-rays, some recorded in the
bundle as training images (same bytes, or a re-encoded image of a training patient), others
never seen; ``evaluate``, ``compare`` and ``audit`` count them, warn, and can leave them out."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from medsight import api
from medsight.bundle import TrainingImages, read_spec, save_bundle
from medsight.data.io import content_sha256
from medsight.data.patients import patient_from_filename
from medsight.data.sources import ImageTable, load_table
from medsight.errors import DataError, MedsightError
from medsight.evaluation import seen as seen_module
from medsight.evaluation.seen import SEEN_COLUMN, hashed, leave_out_seen, mark_seen, seen_count
from medsight.models.zoo import create_model


def _patients(files: list[Path], n: int) -> list[Path]:
    """The first file of each of ``n`` different patients."""
    picked: dict[str, Path] = {}
    for file in files:
        picked.setdefault(patient_from_filename(file), file)
    return list(picked.values())[:n]


@pytest.fixture(scope="module")
def images(chest_xray_dir: Path) -> dict[str, list[Path]]:
    """Training images of 4 pneumonia patients, and 2 test images per class of other patients."""
    trained = _patients(sorted((chest_xray_dir / "train" / "PNEUMONIA").glob("person*.jpeg")), 4)
    names = {patient_from_filename(f) for f in trained}
    unseen = [
        f
        for cls in ("NORMAL", "PNEUMONIA")
        for f in [
            f
            for f in sorted((chest_xray_dir / "test" / cls).glob("*.jpeg"))[::9]
            if patient_from_filename(f) not in names
        ][:2]
    ]
    return {"trained": trained, "unseen": unseen}


@pytest.fixture(scope="module")
def seen_bundle(xray_bundle: Path, images, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The xray bundle's spec with a record of the 4 training images (and their patients)."""
    torch.manual_seed(0)
    spec = read_spec(xray_bundle)
    record = TrainingImages.record(
        [content_sha256(f) for f in images["trained"]],
        [patient_from_filename(f) for f in images["trained"]],
    )
    model = create_model(spec.model_name, 2, 3, spec.image_size)
    folder = tmp_path_factory.mktemp("bundles") / "seen"
    return save_bundle(folder, model, spec, training_images=record)


@pytest.fixture(scope="module")
def data(images, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 training images as they were, 1 training patient's image re-encoded under a new name
    (other bytes, same patient), and 4 images the model never saw."""
    root = tmp_path_factory.mktemp("data") / "mixed"
    (root / "PNEUMONIA").mkdir(parents=True)
    (root / "NORMAL").mkdir()
    for file in images["trained"][:3]:
        shutil.copy(file, root / "PNEUMONIA" / file.name)
    last = images["trained"][3]
    copy = root / "PNEUMONIA" / f"{patient_from_filename(last)}_bacteria_99999.png"
    Image.open(last).save(copy)
    assert content_sha256(copy) != content_sha256(last)
    for file in images["unseen"]:
        shutil.copy(file, root / file.parent.name / file.name)
    return root


@pytest.fixture(scope="module")
def unseen_only(images, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("unseen") / "data"
    for file in images["unseen"]:
        (root / file.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(file, root / file.parent.name / file.name)
    return root


def _metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


class Evaluation:
    """One ``evaluate`` run: its folder, the warnings it logged and the files it hashed."""

    def __init__(self, bundle: Path, data: Path, out: Path, exclude: bool) -> None:
        records: list[logging.LogRecord] = []
        handler = logging.Handler(logging.WARNING)
        handler.emit = records.append
        self.hashed: list[str] = []

        def counting(path):
            self.hashed.append(str(path))
            return content_sha256(path)

        logger = logging.getLogger("medsight.evaluation.seen")
        logger.addHandler(handler)
        try:
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(seen_module, "content_sha256", counting)
                api.evaluate(bundle, data, out, resamples=20, exclude_seen=exclude)
        finally:
            logger.removeHandler(handler)
        self.out, self.warnings = out, [r.getMessage() for r in records]
        self.metrics = json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def evaluations(seen_bundle: Path, xray_bundle: Path, data: Path, tmp_path_factory):
    """``evaluate`` on the mixed data: of the recording bundle, with and without
    ``exclude_seen``, and of a bundle that records nothing."""
    runs = {
        "seen": (seen_bundle, False),
        "excluded": (seen_bundle, True),
        "old": (xray_bundle, False),
    }
    return {
        name: Evaluation(bundle, data, tmp_path_factory.mktemp(name), exclude)
        for name, (bundle, exclude) in runs.items()
    }


def test_images_the_model_saw_are_counted_by_content_and_by_patient(evaluations) -> None:
    metrics = evaluations["seen"].metrics
    assert metrics["n"] == 8 and metrics["seen_in_training"] == 4
    assert metrics["seen"] == {"by": {"content": 3, "patient": 1}, "excluded": 0}


def test_the_terminal_is_warned_with_the_count_and_what_to_do(evaluations) -> None:
    (warning,) = evaluations["seen"].warnings
    assert warning.startswith("4 of 8 images were seen by")
    assert "3 identical files, 1 other images of its patients" in warning
    assert "--exclude-seen" in warning


def test_exclude_seen_scores_exactly_the_images_it_never_saw(evaluations, images) -> None:
    run = evaluations["excluded"]
    assert run.metrics["n"] == 4 and run.metrics["seen_in_training"] == 0
    assert run.metrics["seen"]["excluded"] == 4
    scored = pd.read_csv(run.out / "predictions.csv")["path"].map(lambda p: Path(p).name)
    assert sorted(scored) == sorted(f.name for f in images["unseen"])
    assert "--exclude-seen: left out 4 of 8 images" in run.warnings[-1]
    assert "scoring the other 4" in run.warnings[-1]


def test_a_bundle_that_records_nothing_is_unknown_not_zero(
    evaluations, xray_bundle: Path, data: Path, tmp_path: Path
) -> None:
    run = evaluations["old"]
    assert run.metrics["n"] == 8 and run.metrics["seen_in_training"] is None
    assert run.metrics["seen"]["by"] is None
    assert "records no training images" in run.warnings[0] and "unknown" in run.warnings[0]
    with pytest.raises(MedsightError, match="--exclude-seen: .* records no training images"):
        api.evaluate(xray_bundle, data, tmp_path / "again", exclude_seen=True)
    assert not (tmp_path / "again").exists()


@pytest.mark.parametrize("name", ["seen", "excluded", "old"])
def test_each_file_is_hashed_once(evaluations, name: str) -> None:
    """The seen check and the report's duplicate count share one hash per file."""
    hashed_files = evaluations[name].hashed
    assert len(hashed_files) == len(set(hashed_files)) == 8


@pytest.mark.parametrize(
    ("name", "phrase"),
    [
        ("seen", "4 of 8 images were in the model"),
        ("excluded", "none of these 4 images was in the model"),
        ("old", "unknown. This bundle records no training images"),
    ],
)
def test_the_report_says_what_the_model_had_seen(evaluations, name: str, phrase: str) -> None:
    html = (evaluations[name].out / "report.html").read_text()
    section = html.split('id="seen-in-training">')[1].split("</p>")[0]
    assert phrase in section
    assert ("4 image(s) it had seen were left out" in section) == (name == "excluded")
    assert ('class="warning" id="seen-in-training"' in html) == (name != "excluded")


def test_images_it_never_saw_count_zero_without_a_warning(
    seen_bundle: Path, unseen_only: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="medsight.evaluation.seen"):
        marked = mark_seen(load_table(unseen_only), seen_bundle).frame
    assert seen_count(marked) == 0 and len(marked) == 4
    assert not [r for r in caplog.records if r.name == "medsight.evaluation.seen"]


def test_leaving_out_every_image_is_an_error(seen_bundle: Path, images, tmp_path: Path) -> None:
    (tmp_path / "seen" / "PNEUMONIA").mkdir(parents=True)
    for file in images["trained"]:
        shutil.copy(file, tmp_path / "seen" / "PNEUMONIA" / file.name)
    with pytest.raises(DataError, match="all 4 images were seen .* none is left to score"):
        api.evaluate(seen_bundle, tmp_path / "seen", tmp_path / "out", exclude_seen=True)
    assert not (tmp_path / "out").exists()


def test_a_table_that_carries_hashes_is_not_hashed_again(data: Path) -> None:
    table = load_table(data)
    frame = table.frame.assign(sha256="given")
    carried = ImageTable(frame, table.class_names, table.source)
    assert list(hashed(carried).frame["sha256"]) == ["given"] * 8
    assert hashed(table).frame["sha256"].str.len().eq(64).all()


def test_an_unreadable_file_gets_no_hash(tmp_path: Path) -> None:
    frame = pd.DataFrame({"path": [str(tmp_path / "gone.png")], "label": ["a"], "patient": [None]})
    assert hashed(ImageTable(frame, ["a"], "test")).frame["sha256"].tolist() == [None]


def test_mark_seen_says_how_each_image_was_seen(seen_bundle: Path, data: Path) -> None:
    marked = mark_seen(load_table(data), seen_bundle).frame
    how = dict(zip(marked["path"].map(lambda p: Path(p).name), marked[SEEN_COLUMN], strict=True))
    assert sorted(how.values()) == ["", "", "", "", "content", "content", "content", "patient"]
    assert how[next(n for n in how if "99999" in n)] == "patient"
    assert seen_count(marked) == 4


@pytest.mark.parametrize(
    ("values", "count"),
    [(["", "content", "patient"], 2), (["", ""], 0), ([None, None], None), ([], 0)],
)
def test_seen_count(values: list, count: int | None) -> None:
    frame = pd.DataFrame({SEEN_COLUMN: pd.Series(values, dtype=object)})
    assert seen_count(frame) == count


def test_seen_count_of_an_unchecked_table_is_unknown() -> None:
    assert seen_count(pd.DataFrame({"path": ["x"]})) is None


def test_leave_out_seen_by_either_of_two_bundles() -> None:
    frame = pd.DataFrame(
        {
            "path": ["1", "2", "3", "4"],
            "label": ["a"] * 4,
            "seen_a": ["content", "", "", ""],
            "seen_b": ["", "patient", "", ""],
        }
    )
    kept, left_out = leave_out_seen(ImageTable(frame, ["a"], "t"), ["seen_a", "seen_b"])
    assert left_out == 2 and list(kept.frame["path"]) == ["3", "4"]


def test_compare_counts_per_bundle_and_leaves_out_what_either_saw(
    seen_bundle: Path, xray_bundle: Path, data: Path
) -> None:
    result = api.compare(seen_bundle, xray_bundle, data, resamples=20)
    assert result["n"] == 8 and result["seen_in_training"] == {"a": 4, "b": None}
    with pytest.raises(MedsightError, match="records no training images"):
        api.compare(seen_bundle, xray_bundle, data, exclude_seen=True)
    result = api.compare(seen_bundle, seen_bundle, data, resamples=20, exclude_seen=True)
    assert result["n"] == 4 and result["seen_in_training"] == {"a": 0, "b": 0}
    assert result["seen_excluded"] == 4


def test_audit_leaves_out_and_records_what_the_model_had_seen(
    seen_bundle: Path, data: Path, tmp_path: Path
) -> None:
    found = api.audit(seen_bundle, [data], tmp_path, exclude_seen=True)
    assert found["n"] == 4 and found["seen_in_training"] == 0
    assert found["seen"] == {"by": {"content": 0, "patient": 0}, "excluded": 4}
    assert json.loads((tmp_path / "audit.json").read_text())["seen"]["excluded"] == 4
    metrics = _metrics(tmp_path)  # the evaluation it wrote first
    assert metrics["n"] == 4 and metrics["seen"]["excluded"] == 4
