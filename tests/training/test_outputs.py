"""What ``write_run_outputs`` leaves in a run directory after a small real training run:
metrics of test and val, both predictions tables, the calibrated bundle, plots, card, report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from medsight import __version__, api
from medsight.bundle import TrainingImages, load_bundle
from medsight.config import load_recipe
from medsight.data.dataset import decode_images
from medsight.training.outputs import SUMMARY_KEYS
from medsight.training.run import Run

OVERRIDES = [
    "data.limit=120",
    "data.image_size=[32,32]",
    "train.epochs=1",
    "train.num_workers=0",
    "train.batch_size=16",
]
COLUMNS = [
    "path",
    "label",
    "probability",
    "prediction",
    "p_Parasitized",
    "p_Uninfected",
    "in_domain",
    "domain_score",
]


@pytest.fixture(scope="module")
def run(malaria_subset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    recipe = load_recipe("malaria-lenet", OVERRIDES)
    run = Run.create(recipe, tmp_path_factory.mktemp("outputs") / "run")
    return run.fit(run.prepare(malaria_subset))


@pytest.fixture(scope="module")
def metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


@pytest.fixture(scope="module")
def splits(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "splits.csv")


def _accuracy(table: pd.DataFrame) -> float:
    return float((table["label"] == table["prediction"]).mean())


def test_top_level_figures_are_the_test_splits(
    run: Path, metrics: dict, splits: pd.DataFrame
) -> None:
    test = pd.read_csv(run / "predictions.csv")
    assert metrics["split"] == "test"
    assert metrics["n"] == len(test) == (splits["split"] == "test").sum()
    assert metrics["accuracy"] == pytest.approx(_accuracy(test))
    assert metrics["figures"]["accuracy"]["value"] == metrics["accuracy"]
    is_pos = test["label"] == "Parasitized"
    if is_pos.nunique() == 2:
        assert metrics["roc_auc"] == pytest.approx(
            skm.roc_auc_score(is_pos, test["probability"]), abs=1e-6
        )
    counts = test["label"].value_counts().to_dict()
    assert metrics["counts"] == {c: counts.get(c, 0) for c in ("Parasitized", "Uninfected")}


def test_val_holds_the_validation_splits_figures(
    run: Path, metrics: dict, splits: pd.DataFrame
) -> None:
    val = pd.read_csv(run / "val_predictions.csv")
    assert metrics["val"]["n"] == len(val) == (splits["split"] == "val").sum()
    assert metrics["val"]["accuracy"] == pytest.approx(_accuracy(val))
    assert "val" not in metrics["val"] and "split" not in metrics["val"]


def test_run_facts_are_recorded(metrics: dict) -> None:
    assert metrics["epochs_run"] == 1 and metrics["best_epoch"] == 1
    assert metrics["resumed"] is False and metrics["world_size"] == 1
    assert (metrics["accelerator"], metrics["precision"]) == ("cpu", "32-true")
    assert metrics["split_by"] == "patient" and metrics["split_warning"] is None
    assert metrics["images_without_patient"] == 0
    assert metrics["skipped"] == 0
    assert metrics["published"]["claim"] == "above 90 % validation accuracy"
    assert metrics["data"] and metrics["leakage"] is not None


@pytest.mark.parametrize(
    ("file", "split"), [("predictions.csv", "test"), ("val_predictions.csv", "val")]
)
def test_predictions_tables_are_the_rows_of_their_split(
    run: Path, splits: pd.DataFrame, file: str, split: str
) -> None:
    table = pd.read_csv(run / file)
    assert list(table.columns) == COLUMNS
    rows = splits[splits["split"] == split]
    assert list(table["path"]) == list(rows["path"])  # same rows, same order
    assert list(table["label"]) == list(rows["label"])
    np.testing.assert_allclose(table["p_Parasitized"] + table["p_Uninfected"], 1, atol=1e-6)
    assert table["probability"].equals(table["p_Parasitized"])  # the disease class's


def test_predictions_are_the_bundles_at_its_threshold(run: Path) -> None:
    bundle = load_bundle(run / "bundle")
    spec = bundle.spec
    for file in ("predictions.csv", "val_predictions.csv"):
        table = pd.read_csv(run / file)
        said = np.where(table["probability"] >= spec.threshold, "Parasitized", "Uninfected")
        assert (table["prediction"] == said).all(), file
        pixels, failures = decode_images(list(table["path"]), spec.image_size, spec.channels)
        assert failures == []
        np.testing.assert_allclose(
            bundle.predict_proba(pixels)[:, 0], table["p_Parasitized"], atol=1e-5
        )


def test_bundle_carries_the_threshold_and_temperature_fitted_on_val(
    run: Path, metrics: dict
) -> None:
    spec = load_bundle(run / "bundle").spec
    assert spec.threshold == metrics["threshold"] == metrics["val"]["threshold"]
    assert spec.threshold_rule == metrics["threshold_rule"] == metrics["val"]["threshold_rule"]
    assert spec.temperature == metrics["calibration"]["temperature"]
    assert spec.temperature == metrics["val"]["calibration"]["temperature"]
    assert spec.temperature > 0 and spec.temperature != 1.0  # evaluate.calibrate is on
    assert spec.threshold_rule.endswith("on the validation split")


def test_bundle_summarises_the_held_out_figures(run: Path, metrics: dict) -> None:
    spec = load_bundle(run / "bundle").spec
    assert spec.metrics == {k: metrics.get(k) for k in SUMMARY_KEYS}
    assert spec.metrics["split"] == "test"
    assert spec.medsight_version == __version__
    assert spec.image_size == (32, 32) and spec.recipe == "malaria-lenet"


def test_plots_are_written(run: Path) -> None:
    plots = run / "plots"
    for name in ("curves.png", "confusion_matrix.png", "reliability.png", "predictions.png"):
        data = (plots / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000, name


def test_model_card_is_the_bundles_and_the_report_exists(run: Path, metrics: dict) -> None:
    card = (run / "model_card.md").read_text()
    assert card == (run / "bundle" / "model_card.md").read_text()
    assert f"{metrics['threshold']:.4f}" in card and "Not for clinical use" in card
    report = (run / "report.html").read_text()
    assert report.lstrip().lower().startswith("<!doctype html")
    assert "malaria-lenet" in report and "data:image/png;base64," in report


def test_splits_record_which_rule_gave_each_patient(splits: pd.DataFrame) -> None:
    assert set(splits["patient_source"]) == {"filename"} and splits["patient"].notna().all()


def _train(data: Path, out: Path, *extra: str) -> Path:
    overrides = [o for o in OVERRIDES if not o.startswith("data.limit")] + list(extra)
    run = Run.create(load_recipe("malaria-lenet", overrides), out)
    return run.fit(run.prepare(data))


def test_renamed_cells_are_split_by_image_and_nothing_claims_otherwise(
    malaria_renamed: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING"):
        run = _train(malaria_renamed, tmp_path / "run")
    note = "split by image for 60 of 60 images (no patient id)"
    assert note in caplog.text  # the log
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split_by"] == "image" and metrics["images_without_patient"] == 60
    assert metrics["split_warning"].startswith(note)
    card = (run / "model_card.md").read_text()
    assert f"- Split by: image: {note}; leakage check: no identical image appears" in card
    assert "Split by: patient" not in card and "no patient and no identical" not in card
    report = (run / "report.html").read_text()
    assert f"Split by <strong>image: {note}</strong>" in report
    assert '<p class="ok">Leakage check' not in report


def test_raw_dicom_patient_ids_never_leave_the_files(malaria_dicoms, tmp_path: Path) -> None:
    root, raw_ids = malaria_dicoms  # two patients, so half of them (one) is the val split
    run = _train(root, tmp_path / "run", "data.val_fraction=0.5", "data.test_fraction=0")
    splits = pd.read_csv(run / "splits.csv")
    assert set(splits["patient_source"]) == {"dicom"}
    assert splits.groupby("patient")["split"].nunique().tolist() == [1, 1]
    assert sorted(splits["split"].unique()) == ["train", "val"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split_by"] == "patient" and metrics["images_without_patient"] == 0
    written = [p for p in run.rglob("*") if p.is_file()]
    assert len(written) > 10 and any(p.parent.name == "bundle" for p in written)
    for file in written:
        data = file.read_bytes()
        for raw in raw_ids:
            assert raw.encode() not in data and raw.encode("utf-16-le") not in data, file


def test_bundle_records_the_images_it_was_trained_and_tuned_on(
    run: Path, splits: pd.DataFrame
) -> None:
    record = TrainingImages.load(run / "bundle")
    seen = splits[splits["split"].isin(["train", "val"])]
    assert record is not None and record.hashes == set(seen["sha256"])
    assert record.same_patient(seen["patient"]).all()
    held_out = splits[splits["split"] == "test"]
    assert not record.same_patient(held_out["patient"]).any()  # split by patient
    text = (run / "bundle" / "training_images.json").read_text()
    assert not any(f'"{p}"' in text for p in splits["patient"].dropna())  # never in clear


def test_evaluating_the_run_on_its_own_splits_flags_what_it_saw(
    run: Path, splits: pd.DataFrame, tmp_path: Path
) -> None:
    metrics = api.evaluate(run, run / "splits.csv", tmp_path, resamples=20)
    trained = int(splits["split"].isin(["train", "val"]).sum())
    assert metrics["n"] == len(splits) and metrics["seen_in_training"] == trained
    assert metrics["seen"]["by"]["content"] == trained


def test_a_run_fits_its_domain_guard_and_reports_its_rate(run: Path) -> None:
    metrics = json.loads((run / "metrics.json").read_text())
    domain = metrics["domain"]
    spec = json.loads((run / "bundle" / "bundle.json").read_text())["domain"]
    assert spec["threshold"] > 0 and spec["fitted_on"] > 0
    assert domain["split"] == metrics["split"] and domain["n"] == metrics["n"]
    assert metrics["out_of_domain"] == pytest.approx(domain["flagged"] / domain["n"])
    assert (run / "bundle" / "domain.safetensors").is_file()
    assert f"{domain['flagged']} of {domain['n']} images" in (run / "model_card.md").read_text()
