"""Experiment tracking: tiny real runs logged to CSV, TensorBoard and MLflow, read back with
each tool's own reader (MlflowClient, TensorBoard's EventAccumulator, the CSV file)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from medsight import api
from medsight.cli import main
from medsight.config import load_recipe
from medsight.errors import ConfigError
from medsight.training.module import HistoryAndProgress
from medsight.training.tracking import Tracking

mlflow = pytest.importorskip("mlflow")

QUICK = ["data.image_size=[32, 32]", "train.num_workers=0", "data.limit=120", "train.batch_size=16"]
EPOCHS = 2
PER_EPOCH = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")


def _mlflow_env(monkeypatch: pytest.MonkeyPatch, store: Path) -> str:
    """A local MLflow file store of the test's own (MLflow 3 refuses one without the opt-in)."""
    uri = store.resolve().as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    return uri


def _history(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "history.csv")


@pytest.fixture(scope="module")
def mlflow_run(malaria_subset: Path, tmp_path_factory: pytest.TempPathFactory):
    """``medsight train ... --tracking mlflow``, as a user types it."""
    root = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as monkeypatch:
        uri = _mlflow_env(monkeypatch, root / "mlruns")
        args = ["train", "--recipe", "malaria-lenet", "--data", str(malaria_subset)]
        args += ["--out", str(root / "run"), "--epochs", str(EPOCHS), "--tracking", "mlflow"]
        assert main([*args, *QUICK]) == 0
    return root / "run", uri


def test_mlflow_client_finds_the_run_with_recipe_epochs_figures_and_artefacts(mlflow_run) -> None:
    out, uri = mlflow_run
    client = mlflow.MlflowClient(uri)
    record = json.loads((out / "tracking.json").read_text())
    experiment = client.get_experiment_by_name("malaria-lenet")
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.run_id == record["run_id"] and found.info.status == "FINISHED"
    params = found.data.params
    assert params["train.epochs"] == str(EPOCHS) and params["model.name"] == "malaria_lenet"
    assert params["train.tracking"] == "mlflow" and params["data.limit"] == "120"

    history = _history(out)
    for key in PER_EPOCH:
        points = client.get_metric_history(found.info.run_id, key)
        assert len(points) == EPOCHS, key
        assert [p.value for p in points] == pytest.approx(history[key].tolist(), abs=1e-5)
        assert [p.step for p in points] == sorted({p.step for p in points})  # one per epoch

    metrics = json.loads((out / "metrics.json").read_text())
    logged = found.data.metrics
    for name in ("accuracy", "roc_auc", "sensitivity", "specificity"):
        figure = metrics["figures"][name]
        assert logged[f"test/{name}"] == pytest.approx(figure["value"])
        assert logged[f"test/{name}_ci_low"] == pytest.approx(figure["ci_low"])
        assert logged[f"test/{name}_ci_high"] == pytest.approx(figure["ci_high"])
        assert figure["ci_low"] <= figure["value"] <= figure["ci_high"]

    files = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert {"report.html", "metrics.json", "model_card.md", "bundle"} <= files
    bundle = {a.path for a in client.list_artifacts(found.info.run_id, "bundle")}
    assert {"bundle/bundle.json", "bundle/model.safetensors"} <= bundle
    copied = Path(client.download_artifacts(found.info.run_id, "bundle/bundle.json"))
    assert copied.read_bytes() == (out / "bundle" / "bundle.json").read_bytes()


def test_a_resumed_run_continues_its_mlflow_run(
    malaria_subset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = _mlflow_env(monkeypatch, tmp_path / "mlruns")
    crash = HistoryAndProgress.on_train_epoch_start

    def crash_in_epoch_two(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            raise RuntimeError("simulated crash")
        crash(self, trainer, pl_module)

    monkeypatch.setattr(HistoryAndProgress, "on_train_epoch_start", crash_in_epoch_two)
    out = tmp_path / "run"
    overrides = [*QUICK, "train.tracking=mlflow"]
    with pytest.raises(RuntimeError, match="simulated crash"):
        api.train("malaria-lenet", malaria_subset, out, epochs=EPOCHS, overrides=overrides)
    run_id = json.loads((out / "tracking.json").read_text())["run_id"]
    client = mlflow.MlflowClient(uri)
    assert client.get_run(run_id).info.status == "FAILED"
    assert len(client.get_metric_history(run_id, "train_loss")) == 1

    monkeypatch.setattr(HistoryAndProgress, "on_train_epoch_start", crash)
    api.resume(out)
    assert json.loads((out / "tracking.json").read_text())["run_id"] == run_id
    experiment = client.get_experiment_by_name("malaria-lenet")
    (only,) = client.search_runs([experiment.experiment_id])
    assert only.info.run_id == run_id and only.info.status == "FINISHED"
    points = client.get_metric_history(run_id, "train_loss")
    assert [p.value for p in points] == pytest.approx(_history(out)["train_loss"], abs=1e-5)
    assert points[0].step < points[1].step
    assert "test/accuracy_ci_low" in only.data.metrics


def _two_folds(data: Path, out: Path) -> Path:
    """A quick 2-fold run of malaria-lenet tracked in MLflow."""
    return api.train(
        "malaria-lenet", data, out, epochs=1, overrides=QUICK, folds=2, tracking="mlflow"
    )


def test_kfold_runs_are_children_of_one_parent_run(
    malaria_subset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = _mlflow_env(monkeypatch, tmp_path / "mlruns")
    out = _two_folds(malaria_subset, tmp_path / "cv")
    client = mlflow.MlflowClient(uri)
    parent_id = json.loads((out / "tracking.json").read_text())["run_id"]
    experiment = client.get_experiment_by_name("malaria-lenet")
    runs = client.search_runs([experiment.experiment_id])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id]
    assert len(runs) == 3 and len(children) == 2
    assert sorted(r.data.tags["mlflow.runName"] for r in children) == ["fold-0", "fold-1"]
    for k in range(2):
        record = json.loads((out / f"fold-{k}" / "tracking.json").read_text())
        assert record["parent_run_id"] == parent_id
    parent = client.get_run(parent_id)
    pooled = json.loads((out / "metrics.json").read_text())
    assert parent.data.params["folds"] == "2" and parent.info.status == "FINISHED"
    assert parent.data.metrics["out-of-fold/accuracy"] == pytest.approx(pooled["accuracy"])


def test_tensorboard_event_files_hold_the_per_epoch_scalars(
    malaria_subset: Path, tmp_path: Path
) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = api.train(
        "malaria-lenet",
        malaria_subset,
        tmp_path / "run",
        epochs=EPOCHS,
        overrides=QUICK,
        tracking="tensorboard",
    )
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    history = _history(out)
    for key in PER_EPOCH:
        values = [s.value for s in events.Scalars(key)]
        assert values == pytest.approx(history[key].tolist(), abs=1e-5), key
    metrics = json.loads((out / "metrics.json").read_text())
    (accuracy,) = events.Scalars("test/accuracy_ci_low")
    assert accuracy.value == pytest.approx(metrics["figures"]["accuracy"]["ci_low"])


def test_csv_logger_writes_the_per_epoch_metrics(malaria_subset: Path, tmp_path: Path) -> None:
    out = api.train(
        "malaria-lenet",
        malaria_subset,
        tmp_path / "run",
        epochs=EPOCHS,
        overrides=QUICK,
        tracking="csv",
    )
    logged = pd.read_csv(out / "csv" / "version_0" / "metrics.csv")
    history = _history(out)
    for key in PER_EPOCH:
        assert logged[key].dropna().tolist() == pytest.approx(history[key].tolist(), abs=1e-5)
    metrics = json.loads((out / "metrics.json").read_text())
    assert logged["test/accuracy"].dropna().item() == pytest.approx(metrics["accuracy"])
    hparams = (out / "csv" / "version_0" / "hparams.yaml").read_text()
    assert "train.epochs: 2" in hparams


@pytest.mark.parametrize("backend", ["mlflow", "tensorboard"])
def test_a_missing_extra_is_named_before_any_image_is_read(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, backend, None)  # what `import` sees when it is missing
    data, out = tmp_path / "no-such-data", tmp_path / "run"
    extra = rf'pip install "medsight\[{backend}\]"'
    with pytest.raises(ConfigError, match=rf"train.tracking={backend} needs .*{extra}"):
        api.train("malaria-lenet", data, out, tracking=backend)
    assert not out.exists()


def test_an_mlflow_store_that_cannot_open_is_refused_up_front(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuchscheme://nowhere")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    with pytest.raises(ConfigError, match="cannot open the MLflow store nosuchscheme://nowhere"):
        api.train("malaria-lenet", tmp_path / "data", tmp_path / "run", tracking="mlflow")


def test_tracking_is_off_by_default_and_validated(tmp_path: Path) -> None:
    recipe = load_recipe("malaria-lenet")
    assert recipe.train.tracking == "none" and Tracking(recipe, tmp_path).loggers == []
    with pytest.raises(ConfigError, match="train.tracking"):
        load_recipe("malaria-lenet", ["train.tracking=wandb"])


def test_resume_refuses_a_new_tracking_option(tmp_path: Path, capsys) -> None:
    assert main(["train", "--resume", str(tmp_path), "--tracking", "mlflow"]) == 2
    assert "--tracking would be ignored" in capsys.readouterr().err


def test_a_failed_fold_closes_the_parent_run_as_failed(
    malaria_subset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medsight.training.run import Run

    uri = _mlflow_env(monkeypatch, tmp_path / "mlruns")

    def broken(self, prepared):
        raise RuntimeError("fold broke")

    monkeypatch.setattr(Run, "fit", broken)
    with pytest.raises(RuntimeError, match="fold broke"):
        _two_folds(malaria_subset, tmp_path / "cv")
    parent_id = json.loads((tmp_path / "cv" / "tracking.json").read_text())["run_id"]
    assert mlflow.MlflowClient(uri).get_run(parent_id).info.status == "FAILED"
