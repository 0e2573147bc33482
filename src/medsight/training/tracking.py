"""Experiment tracking (``train.tracking``): CSV, TensorBoard or MLflow, via Lightning's loggers.

Lightning logs the per-epoch metrics through the logger this module picks; this module adds the
resolved recipe as params at the start and the held-out figures with their 95 % CIs at the end
(with MLflow, also the report and the bundle as artefacts). ``tracking.json`` in the run
directory records the MLflow run, so that ``--resume`` continues that run instead of starting
an unrelated one, and so that each fold of a k-fold run is nested under its parent run.

The MLflow store is ``MLFLOW_TRACKING_URI`` when set, else MLflow's own default (MLflow 3:
``sqlite:///mlflow.db`` in the working folder, which needs the full ``mlflow`` package; MLflow 2:
``./mlruns``). MLflow 3 refuses a plain ``./mlruns`` file store unless
``MLFLOW_ALLOW_FILE_STORE=true``.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import Logger

from medsight.config import Recipe, recipe_values
from medsight.errors import ConfigError
from medsight.evaluation.results import read_evaluation
from medsight.fsutil import atomic_write_text

log = logging.getLogger(__name__)

RECORD = "tracking.json"
EXTRA_OF = {"mlflow": "mlflow", "tensorboard": "tensorboard"}  # train.tracking -> its package
# what a finished run's MLflow run keeps as artefacts (those the run directory holds)
ARTEFACTS = (
    "report.html",
    "metrics.json",
    "model_card.md",
    "config.yaml",
    "history.csv",
    "predictions.csv",
    "plots",
    "bundle",
)


def check_tracking(recipe: Recipe) -> None:
    """Raise :class:`ConfigError` when the recipe's tracking cannot work (its extra is missing,
    or the MLflow store cannot be opened), before any image is read."""
    backend = recipe.train.tracking
    package = EXTRA_OF.get(backend)
    if package is None:
        return
    try:
        importlib.import_module(package)
    except ImportError as exc:
        raise ConfigError(
            f"recipe {recipe.name}: train.tracking={backend} needs the {backend!r} extra "
            f'({package} is not installed): pip install "medsight[{backend}]"'
        ) from exc
    if backend == "mlflow":
        _open_store(tracking_uri())


def tracking_uri() -> str:
    """Where MLflow runs go: ``MLFLOW_TRACKING_URI`` when set, else MLflow's default."""
    import mlflow

    return os.environ.get("MLFLOW_TRACKING_URI") or mlflow.get_tracking_uri()


def _open_store(uri: str):
    """An MlflowClient on ``uri``; a store MLflow cannot open is a ConfigError naming it."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.MlflowClient(uri)
    except (MlflowException, ImportError) as exc:
        raise ConfigError(
            f"train.tracking=mlflow: cannot open the MLflow store {uri} ({exc}). Set "
            "MLFLOW_TRACKING_URI to a tracking server or store you can use; the default "
            f'sqlite store needs the full mlflow package: pip install "medsight[mlflow]"'
        ) from exc


def read_record(out: Path) -> dict[str, Any]:
    """The run directory's tracking record (empty when it has none)."""
    path = Path(out) / RECORD
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError(
            f"{path}: not a tracking record ({exc}); delete it to track anew"
        ) from exc


def _write_record(out: Path, record: dict[str, Any]) -> None:
    atomic_write_text(Path(out) / RECORD, json.dumps(record, indent=2))


class MlflowRun:
    """Lightning's MLflow logger for the run in ``out`` and the store it writes to: the
    recorded run when ``record`` names one that its store still has, else a new run (nested
    under the recorded parent, if any)."""

    def __init__(self, recipe: Recipe, out: Path, record: dict[str, Any]):
        from lightning.pytorch.loggers import MLFlowLogger
        from mlflow.exceptions import MlflowException

        self.out, self.uri = Path(out), record.get("tracking_uri") or tracking_uri()
        self.parent = record.get("parent_run_id")
        run_id = record.get("run_id")
        if run_id is not None:
            try:
                _open_store(self.uri).get_run(run_id)
            except (MlflowException, ConfigError) as exc:
                log.warning(
                    "MLflow run %s of %s not found (%s); starting a new one", run_id, out, exc
                )
                run_id = None
        tags = {"medsight.run_dir": str(self.out.resolve())}
        if self.parent:
            tags["mlflow.parentRunId"] = self.parent
        self.logger = MLFlowLogger(
            experiment_name=os.environ.get("MLFLOW_EXPERIMENT_NAME") or recipe.name,
            run_name=self.out.name,
            tracking_uri=self.uri,
            tags=tags,
            run_id=run_id,
        )

    def record(self) -> None:
        """Write ``tracking.json``: where this run's MLflow run is (creating it if need be)."""
        _write_record(
            self.out,
            {
                "tracking": "mlflow",
                "tracking_uri": self.uri,
                "experiment_id": self.logger.experiment_id,
                "run_id": self.logger.run_id,
                "parent_run_id": self.parent,
            },
        )

    def log_artefacts(self) -> None:
        """The run directory's report, bundle and other :data:`ARTEFACTS` it holds."""
        client, run_id = self.logger.experiment, self.logger.run_id
        for name in ARTEFACTS:
            path = self.out / name
            if path.is_dir():
                client.log_artifacts(run_id, str(path), name)
            elif path.is_file():
                client.log_artifact(run_id, str(path))


def final_figures(out: Path) -> dict[str, float]:
    """The held-out figures of ``out/metrics.json`` as ``split/figure`` with ``_ci_low`` and
    ``_ci_high`` where an interval was computed."""
    evaluation = read_evaluation(out)
    split = evaluation.get("split", "test")
    found: dict[str, float] = {}
    for name, figure in evaluation.figures.items():
        if figure.value is None:
            continue
        found[f"{split}/{name}"] = float(figure.value)
        if figure.ci_low is not None and figure.ci_high is not None:
            found[f"{split}/{name}_ci_low"] = float(figure.ci_low)
            found[f"{split}/{name}_ci_high"] = float(figure.ci_high)
    return found


class Tracking(L.Callback):
    """One run's tracking: ``loggers`` for the Trainer (none when ``train.tracking=none``),
    the recipe as params when the fit starts, the final figures by :meth:`finish`."""

    def __init__(self, recipe: Recipe, out: Path, resume: bool = False):
        self.recipe, self.out, self.resume = recipe, Path(out), resume
        self.loggers: list[Logger] = []
        self.mlflow: MlflowRun | None = None
        backend = recipe.train.tracking
        if backend == "csv":
            from lightning.pytorch.loggers import CSVLogger

            # a new version folder on resume: Lightning's CSV writer empties an existing one
            self.loggers.append(CSVLogger(self.out, name="csv"))
        elif backend == "tensorboard":
            from lightning.pytorch.loggers import TensorBoardLogger

            self.loggers.append(
                TensorBoardLogger(self.out, name="tensorboard", version="", default_hp_metric=False)
            )
        elif backend == "mlflow":
            record = read_record(self.out)  # a fresh fold's names its parent run
            if not resume:
                record.pop("run_id", None)
            self.mlflow = MlflowRun(recipe, self.out, record)
            self.loggers.append(self.mlflow.logger)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        if not self.resume:
            for logger in self.loggers:
                logger.log_hyperparams(recipe_values(self.recipe))
        if self.mlflow is not None:
            self.mlflow.record()
            if self.resume:  # it ended FAILED, or still says RUNNING after a kill
                self.mlflow.logger.experiment.update_run(self.mlflow.logger.run_id, "RUNNING")

    def discard(self) -> None:
        """Remove what this fit logged: it stopped in its first epoch and starts again."""
        from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

        for logger in self.loggers:
            if isinstance(logger, CSVLogger | TensorBoardLogger):  # folders inside the run
                shutil.rmtree(logger.log_dir, ignore_errors=True)
        if self.mlflow is not None:
            self.mlflow.logger.experiment.delete_run(self.mlflow.logger.run_id)

    def finish(self, step: int) -> None:
        """Log the run's final figures (and with MLflow its artefacts), then close the logs."""
        if not self.loggers:
            return
        figures = final_figures(self.out)
        for logger in self.loggers:
            logger.log_metrics(figures, step=step)
        if self.mlflow is not None:
            self.mlflow.log_artefacts()
        for logger in self.loggers:
            logger.finalize("success")


class FoldTracking:
    """The parent MLflow run of a k-fold run (``writes``: this process writes): every fold's
    run is nested under it (tag ``mlflow.parentRunId``), and it gets the pooled figures.
    Other trackings log each fold in its own folder (``tensorboard --logdir RUN`` shows all)."""

    def __init__(self, recipe: Recipe, out: Path, folds: int, writes: bool = True):
        self.parent: MlflowRun | None = None
        if writes and recipe.train.tracking == "mlflow":
            self.parent = MlflowRun(recipe, out, {})
            self.parent.logger.log_hyperparams({**recipe_values(recipe), "folds": folds})
            self.parent.record()

    def nest(self, fold_out: Path) -> None:
        """Make the fold run in ``fold_out`` a child of the parent run."""
        if self.parent is not None:
            record = {"tracking_uri": self.parent.uri, "parent_run_id": self.parent.logger.run_id}
            _write_record(fold_out, {"tracking": "mlflow", **record})

    def fail(self) -> None:
        """Close the parent run as FAILED (a fold failed or was interrupted)."""
        if self.parent is not None:
            self.parent.logger.finalize("failed")

    def finish(self) -> None:
        """Log the pooled out-of-fold figures and files, and close the parent run."""
        if self.parent is not None:
            self.parent.logger.log_metrics(final_figures(self.parent.out), step=0)
            self.parent.log_artefacts()
            self.parent.logger.finalize("success")
