"""Run an exported bundle with ONNX Runtime, behind the same interface as a torch Bundle.

The exported graph (:mod:`medsight.serving.export`) takes the (N, H, W, C) uint8 pixels that
:meth:`Bundle.logits` takes and returns the same raw logits: the whole input pipeline is inside
it. ``model.onnx.json`` beside it holds the bundle's spec and the SHA-256 of both the graph and
the weights it was exported from; a graph that no longer matches its bundle is not used.
``model.int8.onnx`` (:mod:`medsight.serving.quantize`) is used instead only when its accuracy
gate adopted it and it was quantised from the current fp32 export; ``precision="fp32"`` forces
the reference.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from medsight.bundle.files import WEIGHTS_FILE, bundle_folder
from medsight.bundle.predictor import Predictor
from medsight.bundle.spec import BundleSpec
from medsight.errors import MedsightError

if TYPE_CHECKING:
    from medsight.bundle.loaded import Bundle

log = logging.getLogger(__name__)
ONNX_NAME = "model.onnx"
Precision = Literal["fp32", "int8"]
INPUT_NAME, OUTPUT_NAME, DOMAIN_NAME = "pixels", "logits", "domain_distance"
# the most an exported graph's logits may differ from PyTorch's on the check images
LOGIT_TOLERANCE = 1e-3


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def sidecar(onnx_path: Path) -> Path:
    """The JSON that describes an exported graph: ``model.onnx`` -> ``model.onnx.json``."""
    return onnx_path.with_name(onnx_path.name + ".json")


def int8_path(onnx_path: Path) -> Path:
    """Where the int8 model goes: ``model.onnx`` -> ``model.int8.onnx``."""
    return onnx_path.with_name(onnx_path.name.removesuffix(".onnx") + ".int8.onnx")


def int8_card_lines(metrics: dict[str, Any]) -> list[str]:
    """The model card's line on int8 (from ``bundle.json``'s ``metrics["int8"]``), if any."""
    record = metrics.get("int8")
    if not record:
        return []
    if not record.get("adopted"):
        return [f"- int8 (ONNX Runtime): not adopted: {record.get('reason')}"]
    auc = record.get("roc_auc") or {}
    return [
        f"- int8 (ONNX Runtime): adopted for predict and serve; on {record['images']} held-out "
        f"images decisions agree {record['agreement']:.1%}, ROC-AUC {auc['fp32']:.4f} fp32 vs "
        f"{auc['int8']:.4f} int8 (calibrated on {record['calibration_images']} training images; "
        "`--precision fp32` gives the reference)"
    ]


class OnnxPredictor(Predictor):
    """ONNX Runtime inference with :class:`Bundle`'s ``logits``/``predict_proba`` interface."""

    engine = "onnxruntime"

    def __init__(
        self, onnx_path: str | Path, spec: BundleSpec | None = None, threads: int | None = None
    ):
        """``spec`` defaults to the one recorded in the graph's ``.json`` description."""
        import onnxruntime as ort

        self.path = Path(onnx_path)
        if spec is None:
            meta_file = sidecar(self.path)
            if not self.path.is_file() or not meta_file.is_file():
                raise MedsightError(
                    f"{self.path}: exported model or its description {meta_file.name} is "
                    "missing; run `medsight export BUNDLE`"
                )
            spec = BundleSpec.model_validate(json.loads(meta_file.read_text())["bundle"])
        self.spec = spec
        quantized = sidecar(self.path).is_file() and "quantization" in _meta(self.path)
        self.engine = "onnxruntime-int8" if quantized else "onnxruntime"
        options = ort.SessionOptions()
        # idle threads sleep instead of spinning: a spinning pool takes the cores that decode
        # the next images (measured: batch prediction 1.1-1.2x faster on 2 cores)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise MedsightError(f"{self.path}: ONNX Runtime cannot load it: {exc}") from exc
        names = {output.name for output in self.session.get_outputs()}
        self.guarded = DOMAIN_NAME in names and spec.domain is not None

    def outputs(
        self, pixels: np.ndarray, batch_size: int | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw logits (mirror-TTA averaged when the bundle uses TTA) and the domain guard's
        distances (None when the graph has no guard), like Bundle.outputs."""
        wanted = [OUTPUT_NAME, DOMAIN_NAME] if self.guarded else [OUTPUT_NAME]

        def run(chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
            got = self.session.run(wanted, {INPUT_NAME: np.ascontiguousarray(chunk)})
            return got[0], got[1] if self.guarded else None

        return self._batches(pixels, batch_size, run)


def _meta(onnx_path: Path) -> dict[str, Any]:
    try:
        return json.loads(sidecar(onnx_path).read_text())
    except ValueError as exc:
        raise MedsightError(f"{sidecar(onnx_path)}: unreadable export description: {exc}") from exc


def current_export(folder: Path) -> Path | None:
    """The bundle's ``model.onnx`` if it was exported from the present weights and is unchanged
    since; None (with a warning for a stale one) otherwise."""
    onnx_path, weights = folder / ONNX_NAME, folder / WEIGHTS_FILE
    if not (onnx_path.is_file() and sidecar(onnx_path).is_file() and weights.is_file()):
        return None
    meta = _meta(onnx_path)
    if meta.get("weights_sha256") != sha256_file(weights):
        log.warning("%s was exported from other weights; using PyTorch (re-export)", onnx_path)
    elif meta.get("onnx_sha256") != sha256_file(onnx_path):
        log.warning("%s changed since export; using PyTorch (re-export)", onnx_path)
    else:
        return onnx_path
    return None


def adopted_int8(folder: Path, fp32: Path | None) -> tuple[Path | None, str]:
    """The bundle's ``model.int8.onnx`` when its gate adopted it and it was quantised from
    the current fp32 export ``fp32`` (unchanged since); else None and why not."""
    path = int8_path(folder / ONNX_NAME)
    if not (path.is_file() and sidecar(path).is_file()):
        return None, f"{path.name} is missing (run `medsight export BUNDLE --quantize int8`)"
    meta = _meta(path)
    record = meta.get("quantization") or {}
    if not record.get("adopted"):
        return None, f"{path.name} was not adopted: {record.get('reason', 'no gate record')}"
    if fp32 is None or meta.get("fp32_onnx_sha256") != sha256_file(fp32):
        return None, f"{path.name} is not from the current {ONNX_NAME} (re-export)"
    if meta.get("onnx_sha256") != sha256_file(path):
        return None, f"{path.name} changed since export (re-export)"
    return path, ""


def choose_export(
    folder: Path, prefer_onnx: bool = True, precision: Precision | None = None
) -> Path | None:
    """The graph predictions should run on (None: PyTorch): the adopted int8 model unless
    ``precision="fp32"``, else the current fp32 export. ``precision="int8"`` without an
    adopted, current int8 model raises MedsightError saying why."""
    if precision not in (None, "fp32", "int8"):
        raise MedsightError(f"precision is 'fp32' or 'int8', not {precision!r}")
    if precision == "int8" and not prefer_onnx:
        raise MedsightError("int8 runs on ONNX Runtime: drop --no-onnx or use --precision fp32")
    fp32 = current_export(folder) if prefer_onnx else None
    if precision == "fp32" or fp32 is None and precision is None:
        return fp32
    int8, why = adopted_int8(folder, fp32)
    if int8 is None and precision == "int8":
        raise MedsightError(f"{folder}: no int8 model to use: {why}")
    return int8 or fp32


def load_predictor(
    bundle_path: str | Path, prefer_onnx: bool = True, precision: Precision | None = None
) -> Bundle | OnnxPredictor:
    """The bundle's exported ONNX model when there is a current one (its adopted int8 model
    unless ``precision="fp32"``), else the torch Bundle: a stale export is passed over with a
    warning rather than giving different answers."""
    folder = bundle_folder(bundle_path)
    onnx_path = choose_export(folder, prefer_onnx, precision)
    if onnx_path:
        return OnnxPredictor(onnx_path)
    from medsight.bundle.folder import load_bundle  # PyTorch: only without a current export

    return load_bundle(folder)
