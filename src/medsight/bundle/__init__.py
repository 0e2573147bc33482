"""The model bundle: the one artefact that flows from training to every later step.

A bundle knows how to feed its model (:mod:`.pipeline`), how to turn logits into an answer
(:mod:`.spec`: calibrated probabilities, the decision at its threshold, its task kind), what it
was trained on (:mod:`.seen`), and how it is stored (:mod:`.folder`). :mod:`.loaded` runs it in
PyTorch, :mod:`.runtime` in ONNX Runtime, behind one
:class:`~medsight.bundle.predictor.Predictor` interface; the predictions table of
:mod:`.predictions` is what evaluate, predict and training write.

It sits above ``data`` and ``models`` and below training, evaluation, explanation and serving,
and imports none of them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# name -> submodule. Imported when first used (PEP 562), so that the ONNX Runtime path
# (files, spec, runtime, predictions) never imports PyTorch: see :mod:`.files`.
_HOMES = {
    "DomainGuard": "domain",
    "fit_guard": "domain",
    "load_bundle": "folder",
    "read_bundle": "folder",
    "save_bundle": "folder",
    "bundle_folder": "files",
    "read_spec": "files",
    "write_card": "files",
    "Bundle": "loaded",
    "InputPipeline": "pipeline",
    "PixelsToLogits": "pipeline",
    "prediction_columns": "predictions",
    "predictions_frame": "predictions",
    "Answers": "predictor",
    "Predictor": "predictor",
    "default_batch_size": "predictor",
    "OnnxPredictor": "runtime",
    "load_predictor": "runtime",
    "TrainingImages": "seen",
    "BundleSpec": "spec",
    "DomainSpec": "spec",
    "decide": "spec",
    "softmax": "spec",
}

if TYPE_CHECKING:
    from medsight.bundle.domain import DomainGuard, fit_guard
    from medsight.bundle.files import bundle_folder, read_spec, write_card
    from medsight.bundle.folder import load_bundle, read_bundle, save_bundle
    from medsight.bundle.loaded import Bundle
    from medsight.bundle.pipeline import InputPipeline, PixelsToLogits
    from medsight.bundle.predictions import prediction_columns, predictions_frame
    from medsight.bundle.predictor import Answers, Predictor, default_batch_size
    from medsight.bundle.runtime import OnnxPredictor, load_predictor
    from medsight.bundle.seen import TrainingImages
    from medsight.bundle.spec import BundleSpec, DomainSpec, decide, softmax


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Answers",
    "Bundle",
    "BundleSpec",
    "DomainGuard",
    "DomainSpec",
    "InputPipeline",
    "OnnxPredictor",
    "PixelsToLogits",
    "Predictor",
    "TrainingImages",
    "bundle_folder",
    "decide",
    "default_batch_size",
    "fit_guard",
    "load_bundle",
    "load_predictor",
    "prediction_columns",
    "predictions_frame",
    "read_bundle",
    "read_spec",
    "save_bundle",
    "softmax",
    "write_card",
]
