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

from medsight.bundle.domain import DomainGuard, DomainSpec, fit_guard
from medsight.bundle.folder import (
    bundle_folder,
    load_bundle,
    read_bundle,
    read_spec,
    save_bundle,
    write_card,
)
from medsight.bundle.loaded import Bundle
from medsight.bundle.pipeline import InputPipeline, PixelsToLogits
from medsight.bundle.predictions import prediction_columns, predictions_frame
from medsight.bundle.predictor import Answers, Predictor
from medsight.bundle.runtime import OnnxPredictor, load_predictor
from medsight.bundle.seen import TrainingImages
from medsight.bundle.spec import BundleSpec, decide, softmax

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
