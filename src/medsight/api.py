"""The Python API; each function is one ``medsight`` command (see :mod:`medsight.cli`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from medsight.config import load_recipe, recipe_names, recipe_values
from medsight.data.inspect import Inspection, inspect_data
from medsight.data.patients import PatientRule
from medsight.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from medsight.evaluation.labelled import LabelledData
    from medsight.evaluation.results import Evaluation
    from medsight.serving.batch import BatchResult
    from medsight.serving.classifier import ImageClassifier
    from medsight.training.result import TrainedRun


def list_recipes() -> dict[str, str]:
    """Built-in recipe names with their one-line descriptions."""
    return {name: load_recipe(name).description for name in recipe_names()}


def show_recipe(recipe: str, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """A recipe's every field as a dotted key (``train.epochs``) with its resolved value,
    defaults included; ``overrides`` (``key=value``) are applied first, as ``train`` would."""
    return recipe_values(load_recipe(recipe, list(overrides)))


def inspect(
    path: str | Path,
    patient_pattern: str | None = None,
    patient_from: str | None = None,
    multi_label: bool = False,
    labels: list[str] | None = None,
) -> Inspection:
    """Counts per split and class, patients (how many images have an id, from which rule),
    sizes, modes, duplicates and unreadable files. ``patient_pattern`` / ``patient_from``
    try a recipe's ``data.patient_pattern`` / ``data.patient_from`` before training;
    ``multi_label`` / ``labels`` read a sheet as ``data.multi_label`` / ``data.labels`` do
    (counts are then images with each label)."""
    from medsight.data.multilabel import MultiLabelRule

    if patient_from not in (None, "parent"):
        raise ConfigError(f"patient_from={patient_from!r}: the only choice is 'parent'")
    rule = PatientRule(patient_pattern, patient_from == "parent")
    multi = MultiLabelRule(labels=list(labels or [])) if multi_label or labels else None
    return inspect_data(path, patients=rule, multi=multi)


def download(name: str, root: str | Path | None = None) -> Path:
    """Fetch a public dataset into the cache (``MEDSIGHT_DATA``); returns its folder."""
    from medsight.data.download import download_dataset

    return download_dataset(name, Path(root) if root else None)


def train(
    recipe: str,
    data: str | Path,
    out: str | Path,
    epochs: int | None = None,
    seed: int | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    overwrite: bool = False,
    devices: int = 1,
    folds: int | None = None,
    accelerator: str | None = None,
    tracking: str | None = None,
) -> TrainedRun:
    """Train a recipe (built-in name or YAML path) on ``data``; returns the run (path-like: its
    folder; ``.bundle``, ``.metrics`` for the held-out figures, ``.folds``).

    ``accelerator`` (``auto``, ``cpu``, ``gpu``) sets ``train.accelerator``: ``auto`` trains
    on a CUDA GPU when there is one. ``tracking`` (``csv``, ``tensorboard``, ``mlflow``) sets
    ``train.tracking`` (docs/commands.md, Tracking).

    ``devices`` > 1 trains with DDP across that many processes on this machine (or per node,
    under torchrun / SLURM). ``folds`` = K trains K models by patient-grouped k-fold
    cross-validation (``RUN/fold-k``) and pools their out-of-fold metrics in ``RUN``.
    """
    from medsight.training.cv import cross_validate
    from medsight.training.run import train as fit

    extra = list(overrides)
    if epochs is not None:
        extra.append(f"train.epochs={epochs}")
    if seed is not None:
        extra.append(f"train.seed={seed}")
    if accelerator is not None:
        extra.append(f"train.accelerator={accelerator}")
    if tracking is not None:
        extra.append(f"train.tracking={tracking}")
    from medsight.training.result import TrainedRun

    config = load_recipe(recipe, extra)
    if folds is not None:
        folder = cross_validate(config, data, out, folds, overwrite=overwrite, devices=devices)
    else:
        folder = fit(config, data, out, overwrite=overwrite, devices=devices)
    return TrainedRun(folder)


def resume(run: str | Path, devices: int = 1, accelerator: str | None = None) -> TrainedRun:
    """Continue an interrupted run from its last checkpoint, with its own config and splits
    (on another ``accelerator`` when given)."""
    from medsight.training.result import TrainedRun
    from medsight.training.run import resume as resume_run

    return TrainedRun(resume_run(run, devices=devices, accelerator=accelerator))


def load(
    bundle: str | Path, prefer_onnx: bool = True, precision: str | None = None
) -> ImageClassifier:
    """A bundle ready to answer images from Python: ``.predict(x)`` (a path, bytes, a PIL image
    or an array) returns a :class:`~medsight.serving.classifier.Prediction`, ``.explain(x)``
    the heat-map. ``bundle`` is a folder, a run directory, or ``hf://ORG/NAME[@REVISION]`` on
    the Hugging Face Hub. It runs the bundle's adopted int8 model when it has one, unless
    ``precision="fp32"``."""
    from medsight.bundle.hub import fetch_hub_bundle, is_hub_uri
    from medsight.serving.classifier import ImageClassifier

    folder = fetch_hub_bundle(bundle) if is_hub_uri(bundle) else bundle
    return ImageClassifier(folder, prefer_onnx, precision)


def predict(
    bundle: str | Path,
    paths: list[str | Path],
    out: str | Path,
    batch_size: int | None = None,
    shard: str | None = None,
    onnx: bool = True,
    precision: str | None = None,
) -> BatchResult:
    """Predict every image in ``paths`` (files, folders searched recursively) into the CSV
    ``out``; a rerun continues where an interrupted one stopped. ``shard="i/N"`` takes a
    deterministic 1/N of the files (cluster array jobs); ``precision="fp32"`` passes over an
    adopted int8 model; ``batch_size`` images go through the model at a time (None: 16 at
    224 x 224, more for smaller inputs). Returns the counts and the unreadable files."""
    from medsight.serving.batch import predict_files

    return predict_files(bundle, list(paths), out, batch_size, shard, onnx, precision=precision)


def explain(
    bundle: str | Path,
    images: list[str | Path],
    out: str | Path,
    method: str = "gradcam",
    target: str | None = None,
    layer: str | None = None,
) -> pd.DataFrame:
    """Heat-map overlays (``<stem>_<method>.png``, at each image's own size) and
    ``explanations.csv`` (prediction, target class, layer, faithfulness) in ``out``; returns
    that table as a DataFrame. ``images`` may be files or folders."""
    from medsight.bundle import load_bundle
    from medsight.data.io import find_images
    from medsight.explanation import explain_files

    frame, _ = explain_files(load_bundle(bundle), find_images(images), out, method, target, layer)
    return frame


def export(
    bundle: str | Path,
    out: str | Path | None = None,
    quantize: bool | None = None,
    check: list[str | Path] | None = None,
    format: str = "onnx",
    name: str | None = None,
    calibrate: list[str | Path] | None = None,
) -> Path:
    """Export a bundle to ONNX (default ``BUNDLE/model.onnx`` + ``model.onnx.json``), kept only
    if it matches PyTorch on the ``check`` images (files or folders; synthetic ones without);
    with ``model.int8.onnx`` beside it, calibrated on training-split images (``calibrate``, else
    the run's train split) and adopted only when it agrees with fp32 on held-out images
    (``quantize``: None when calibration images are at hand, True required, False never).

    ``format="triton"``: the same checked graph as the Triton model folder ``out/<name>``
    (``config.pbtxt``, ``1/model.onnx``, ``labels.txt``; ``name`` defaults to the bundle's);
    returns that folder."""
    if format == "triton":
        from medsight.serving.triton import export_triton

        if out is None:
            raise ConfigError("a Triton export needs out: the model repository folder")
        if quantize or calibrate:
            raise ConfigError("a Triton export is the fp32 graph; int8 is for format='onnx'")
        return export_triton(bundle, out, name, check)
    if format != "onnx":
        raise ConfigError(f"export format is 'onnx' or 'triton', not {format!r}")
    if name is not None:
        raise ConfigError("name is the Triton model's name: give it with format='triton'")
    from medsight.serving.export import export_onnx

    return export_onnx(bundle, out, quantize, check, calibrate=calibrate)


def _labelled(data, split, class_map, drop_unknown, exclude_seen) -> LabelledData:
    from medsight.evaluation.labelled import LabelledData

    return LabelledData.of(data, split, class_map, drop_unknown, exclude_seen)


def evaluate(
    bundle: str | Path,
    data: str | Path | LabelledData,
    out: str | Path,
    split: str | None = None,
    class_map: dict[str, str] | None = None,
    drop_unknown: bool = False,
    resamples: int | None = None,
    seed: int = 0,
    exclude_seen: bool = False,
) -> Evaluation:
    """Score a bundle on labelled data: ``metrics.json`` (each figure with a 95 % CI, patients
    resampled), ``predictions.csv``, plots, ``model_card.md`` and ``report.html`` in ``out``;
    returns them as an :class:`~medsight.evaluation.results.Evaluation` (``.figures``,
    ``.to_dict()``, and a read-only mapping of ``metrics.json``).

    ``split`` restricts a source that has splits (e.g. ``RUN/splits.csv`` with
    ``split="test"``: the patients the model never saw). For external validation, ``class_map``
    renames the data's classes to the model's (``{"COVID-19": "COVID"}``) and ``drop_unknown``
    leaves out images of other classes. ``data`` may also be a
    :class:`~medsight.evaluation.labelled.LabelledData` that says all of this at once.

    Images the model was trained or tuned on (same bytes, or a patient it saw) are counted in
    ``seen_in_training`` (None when the bundle records nothing) with a warning;
    ``exclude_seen`` leaves them out before scoring.
    """
    from medsight.evaluation.results import Evaluation
    from medsight.evaluation.scoring import evaluate_bundle

    labelled = _labelled(data, split, class_map, drop_unknown, exclude_seen)
    return Evaluation(evaluate_bundle(bundle, labelled, out, resamples, seed), out)


def serve(
    bundle: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    request_timeout: float = 30.0,
    **limits: Any,
) -> None:
    """Serve a bundle: REST API (``/v1/predict``, ``/v1/explain``, ``/v1/model``) and web page.

    ``api_key`` defaults to the ``MEDSIGHT_API_KEY`` environment variable; ``request_timeout``:
    seconds a client has to send a whole request (a slower one gets a 408 and is disconnected);
    ``limits`` go to :func:`medsight.serving.app.create_app` (``max_upload_bytes``,
    ``max_pixels``, ``max_decodes``, ...).
    """
    import logging
    import os

    import uvicorn

    from medsight.serving.app import create_app
    from medsight.serving.logs import uvicorn_log_config
    from medsight.serving.protocol import timed_protocol

    api_key = api_key or os.environ.get("MEDSIGHT_API_KEY") or None
    protocol = timed_protocol(request_timeout)
    app = create_app(bundle, api_key=api_key, **limits)
    if api_key is None and host not in ("127.0.0.1", "localhost", "::1"):
        logging.getLogger(__name__).warning(
            "serving on %s without an API key: anyone who can reach it can use the model "
            "(set MEDSIGHT_API_KEY)",
            host,
        )
    try:
        uvicorn.run(
            app,
            host=host,
            port=port,
            http=protocol,
            log_level="info",
            log_config=uvicorn_log_config(),
            access_log=False,  # medsight's own line per request has the client too
        )
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl+C once it has shut down gracefully
        pass


def compare(
    bundle_a: str | Path,
    bundle_b: str | Path,
    data: str | Path | LabelledData,
    split: str | None = None,
    class_map: dict[str, str] | None = None,
    drop_unknown: bool = False,
    resamples: int | None = None,
    out: str | Path | None = None,
    exclude_seen: bool = False,
) -> dict[str, Any]:
    """Paired comparison of two bundles on the same images: DeLong's test for ROC-AUC and a
    paired patient bootstrap (differences B - A with CIs and p-values) for the other figures.
    ``exclude_seen`` leaves out the images either bundle was trained or tuned on."""
    from medsight.evaluation.compare import compare_bundles

    labelled = _labelled(data, split, class_map, drop_unknown, exclude_seen)
    return compare_bundles(bundle_a, bundle_b, labelled, resamples, out=out)


def audit(
    bundle: str | Path,
    data: list[str | Path] | LabelledData,
    out: str | Path,
    split: str | None = None,
    class_map: dict[str, str] | None = None,
    drop_unknown: bool = False,
    exclude_seen: bool = False,
) -> dict[str, Any]:
    """Shortcut audit (source probe, occlusion probe) added to the report in ``out``; several
    ``data`` paths are several image sources. ``exclude_seen`` leaves out the images the model
    was trained or tuned on."""
    from medsight.evaluation.audit import audit_bundle

    labelled = _labelled(data, split, class_map, drop_unknown, exclude_seen)
    return audit_bundle(bundle, labelled, out)
