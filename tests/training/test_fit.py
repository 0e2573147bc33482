"""A short real training run end to end: run directory, report, bundle, then ``evaluate``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from medsight import api
from medsight.bundle import load_bundle
from medsight.errors import MedsightError, TrainingError
from medsight.evaluation.thresholds import choose_threshold

# Small and fast; inputs centred so that 480 training images escape the initial plateau for
# any seed (with the tutorial's [0, 1] inputs some seeds stay at chance for many epochs).
QUICK = [
    "preprocess.mean=[0.5]",
    "preprocess.std=[0.25]",
    "data.image_size=[64, 64]",
    "train.optimizer=adam",
    "train.lr=0.002",
    "train.batch_size=16",
    "train.num_workers=0",
]
RUN_FILES = [
    "config.yaml",
    "splits.csv",
    "skipped.csv",
    "metrics.json",
    "history.csv",
    "val_predictions.csv",
    "report.html",
    "plots/curves.png",
    "plots/confusion_matrix.png",
    "plots/predictions.png",
    "bundle/bundle.json",
    "bundle/model.safetensors",
    "checkpoints/best.ckpt",
    "checkpoints/last.ckpt",
]


@pytest.fixture(scope="module")
def data_with_broken_files(malaria_subset: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("malaria_broken")
    shutil.copytree(malaria_subset, root / "data", symlinks=True)
    (root / "data" / "Parasitized" / "zero_bytes.png").write_bytes(b"")
    first = sorted((malaria_subset / "Uninfected").iterdir())[0]
    (root / "data" / "Uninfected" / "corrupt.png").write_bytes(first.read_bytes()[:300])
    return root / "data"


@pytest.fixture(scope="module")
def run(data_with_broken_files: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "malaria"
    return api.train(
        "malaria-lenet", data_with_broken_files, out, epochs=8, seed=0, overrides=QUICK
    )


def test_run_directory_is_complete(run: Path) -> None:
    missing = [name for name in RUN_FILES if not (run / name).is_file()]
    assert missing == []
    history = pd.read_csv(run / "history.csv")
    assert list(history["epoch"]) == list(range(1, 9))
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]


def test_training_learns_on_held_out_patients(run: Path) -> None:
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["n"] >= 40
    assert metrics["accuracy"] >= 0.75, metrics  # chance is 0.5
    assert metrics["roc_auc"] >= 0.75
    assert metrics["positive_class"] == "Parasitized"
    assert {"sensitivity", "specificity", "val"} <= set(metrics)


def test_splits_have_no_patient_in_two_splits(run: Path) -> None:
    splits = pd.read_csv(run / "splits.csv")
    columns = ["path", "label", "patient", "patient_source", "split", "sha256"]
    assert list(splits.columns) == columns
    assert set(splits["patient_source"]) == {"filename"}  # the rule behind every patient id
    assert len(splits) == 600 and set(splits["split"]) == {"train", "val", "test"}
    assert (splits.groupby("patient")["split"].nunique() == 1).all()
    assert splits["sha256"].str.fullmatch(r"[0-9a-f]{64}").all()


def test_broken_files_are_skipped_and_reported(run: Path) -> None:
    skipped = pd.read_csv(run / "skipped.csv")
    assert sorted(Path(p).name for p in skipped["path"]) == ["corrupt.png", "zero_bytes.png"]
    report = (run / "report.html").read_text()
    assert "corrupt.png" in report and "zero_bytes.png" in report
    assert "above 90 % validation accuracy" in report  # the tutorial's figure, beside ours
    assert "Not for clinical use" in report and "data:image/png;base64," in report


def test_bundle_carries_preprocessing_and_classes(run: Path) -> None:
    spec = load_bundle(run / "bundle").spec
    assert spec.image_size == (64, 64) and spec.channels == 3
    assert spec.class_names == ["Parasitized", "Uninfected"]
    assert spec.positive_class == "Parasitized" and spec.recipe == "malaria-lenet"


def test_val_predictions_are_what_the_threshold_was_chosen_on(run: Path) -> None:
    splits = pd.read_csv(run / "splits.csv")
    val = pd.read_csv(run / "val_predictions.csv")
    assert sorted(val["path"]) == sorted(splits.loc[splits["split"] == "val", "path"])
    spec = load_bundle(run / "bundle").spec
    threshold, _ = choose_threshold(
        val["label"] == spec.positive_class, val["probability"].to_numpy(), "youden"
    )
    assert spec.threshold_rule.startswith("youden")
    assert threshold == pytest.approx(spec.threshold, abs=1e-6)


def test_train_returns_a_typed_run_and_evaluate_a_typed_evaluation(
    run: Path, tmp_path: Path
) -> None:
    import os

    from medsight.evaluation.results import Evaluation
    from medsight.training.result import TrainedRun

    assert isinstance(run, TrainedRun) and os.fspath(run) == str(run.folder)
    assert run.bundle == run.folder / "bundle" and run.folds == []
    held_out = run.metrics
    written = json.loads((run / "metrics.json").read_text())
    assert held_out.to_dict() == written and held_out["split"] == "test"
    auc = held_out.figures["roc_auc"]
    assert auc.value == written["figures"]["roc_auc"]["value"]
    assert auc.ci_low <= auc.value <= auc.ci_high and "95 % CI" in str(auc)
    evaluation = api.evaluate(run.bundle, run / "splits.csv", tmp_path, split="test", resamples=50)
    assert isinstance(evaluation, Evaluation) and evaluation.folder == tmp_path
    assert evaluation.to_dict() == json.loads((tmp_path / "metrics.json").read_text())
    assert evaluation.figures["accuracy"].value == evaluation["accuracy"]
    copy = evaluation.to_dict()
    copy["accuracy"] = -1.0  # a copy: the evaluation itself stays as written
    assert evaluation["accuracy"] != -1.0


def test_evaluate_on_unseen_patients(run: Path, tmp_path: Path) -> None:
    metrics = api.evaluate(run / "bundle", run / "splits.csv", tmp_path, split="test")
    written = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("accuracy", "sensitivity", "specificity", "roc_auc", "n"):
        assert written[key] == metrics[key]
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    assert list(predictions.columns) == [
        "path",
        "label",
        "probability",
        "prediction",
        "p_Parasitized",
        "p_Uninfected",
        "in_domain",
        "domain_score",
    ]
    assert predictions["probability"].equals(predictions["p_Parasitized"])
    assert len(predictions) == written["n"]
    agree = (predictions["label"] == predictions["prediction"]).mean()
    assert agree == pytest.approx(written["accuracy"])
    # probability is the disease class's: high where the model says Parasitized
    said_pos = predictions["prediction"] == "Parasitized"
    threshold = load_bundle(run / "bundle").spec.threshold
    assert (predictions.loc[said_pos, "probability"] >= threshold).all()
    assert (predictions.loc[~said_pos, "probability"] < threshold).all()
    training = json.loads((run / "metrics.json").read_text())
    assert written["accuracy"] == pytest.approx(training["accuracy"], abs=1e-9)


def test_a_non_empty_out_folder_is_never_overwritten(run: Path, tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(MedsightError, match="not empty"):
        api.train("malaria-lenet", run / "splits.csv", tmp_path, epochs=1)
    with pytest.raises(MedsightError, match="not a medsight run directory"):
        api.train("malaria-lenet", run / "splits.csv", tmp_path, epochs=1, overwrite=True)
    assert (tmp_path / "mine.txt").read_text() == "precious"


def test_evaluate_rejects_classes_the_model_does_not_know(run: Path, tmp_path: Path) -> None:
    (tmp_path / "data" / "Healthy").mkdir(parents=True)
    source = pd.read_csv(run / "splits.csv")["path"].iloc[0]
    (tmp_path / "data" / "Healthy" / "cell.png").write_bytes(Path(source).read_bytes())
    with pytest.raises(MedsightError, match=r"classes \['Healthy'\] are not known"):
        api.evaluate(run, tmp_path / "data", tmp_path / "eval")


def test_threshold_and_temperature_are_fitted_on_val_and_carried_by_the_bundle(run: Path) -> None:
    spec = load_bundle(run / "bundle").spec
    assert spec.threshold_rule == "youden on the validation split"
    assert 0 < spec.threshold < 1 and spec.temperature > 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["threshold"] == spec.threshold == metrics["val"]["threshold"]
    card = (run / "bundle" / "model_card.md").read_text()
    assert f"medsight {spec.medsight_version}" in card and f"{spec.threshold:.4f}" in card
    assert card == (run / "model_card.md").read_text()


def test_last_checkpoint_is_the_last_epoch_even_when_it_is_not_the_best(run: Path) -> None:
    history = pd.read_csv(run / "history.csv")
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    best = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    assert last["epoch"] == len(history) - 1  # 0-based: the final epoch, whatever val did
    assert best["epoch"] == int(history["val_accuracy"].idxmax())  # monitor: val_accuracy


def test_weight_averaging_puts_the_average_in_the_bundle(
    malaria_subset: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    out = api.train(
        "malaria-lenet",
        malaria_subset,
        tmp_path / "ema",
        epochs=2,
        seed=0,
        overrides=[*QUICK, "train.ema=0.9"],
    )
    best = torch.load(out / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    steps = int(best["averaging_state"]["n_averaged"])
    assert steps == best["global_step"] > 0  # updated after every optimiser step
    bundle = load_file(out / "bundle" / "model.safetensors")
    for name, weights in bundle.items():
        torch.testing.assert_close(weights, best["state_dict"][f"model.{name}"])
    moved = [
        (best["state_dict"][k] - best["current_model_state"][k]).abs().max().item()
        for k in best["state_dict"]
        if best["state_dict"][k].is_floating_point()
    ]
    assert max(moved) > 1e-4  # the average, not the last step's weights


def test_a_diverged_training_stops_with_what_to_change(
    malaria_subset: Path, tmp_path: Path
) -> None:
    """A learning rate far too high turns the weights into NaN: the run says so and names the
    setting, instead of fitting a threshold to NaN (it used to end in scikit-learn's
    "Input contains NaN")."""
    out = tmp_path / "run"
    overrides = [*QUICK, "train.lr=1e12", "data.limit=60"]
    with pytest.raises(
        TrainingError, match=r"training diverged.*not numbers.*train\.lr \(now 1e\+12"
    ):
        api.train("malaria-lenet", malaria_subset, out, epochs=1, seed=0, overrides=overrides)
    history = pd.read_csv(out / "history.csv")
    assert history["train_loss"].isna().all()  # what the message points to
    assert not (out / "bundle").exists()  # no bundle from a model that gives NaN
