"""Export a bundle to ONNX, proven equal to PyTorch on real images before it is kept.

The graph is the bundle's own network (:class:`medsight.bundle.PixelsToLogits`): (N, H, W, C)
uint8 pixels, already resized to the bundle's input size, to its raw logits, with the lung crop,
normalisation and mirror TTA inside; its second output is the domain guard's distance. A runtime
in any language needs only the resize and
``model.onnx.json`` (class names, threshold, temperature).
The batch dimension is dynamic. An export that disagrees with PyTorch (logits beyond the
tolerance, or any decision) is refused with the numbers, never written.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medsight.bundle import Bundle, BundleSpec, OnnxPredictor, bundle_folder, load_bundle
from medsight.bundle.runtime import (
    DOMAIN_NAME,
    INPUT_NAME,
    ONNX_NAME,
    OUTPUT_NAME,
    sha256_file,
    sidecar,
)
from medsight.data.io import find_images, load_image
from medsight.errors import MedsightError, UnreadableImageError
from medsight.fsutil import atomic_write_text, temp_beside

__all__ = ["export_onnx", "int8_path", "parity"]

log = logging.getLogger(__name__)
MAX_CHECK_IMAGES = 256
SYNTHETIC_IMAGES = 16
LOGIT_TOLERANCE = 1e-3


def int8_path(onnx_path: Path) -> Path:
    """Where the int8 model goes: ``model.onnx`` -> ``model.int8.onnx``."""
    return onnx_path.with_name(onnx_path.name.removesuffix(".onnx") + ".int8.onnx")


def _check_pixels(
    spec: BundleSpec, check_images: list[str | Path] | None
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Pixels to compare on: the given images (files or folders; labels from class folders
    when every image has one), else a seeded synthetic batch."""
    size = tuple(spec.image_size)
    if not check_images:
        rng = np.random.default_rng(0)
        shape = (SYNTHETIC_IMAGES, *size, spec.channels)
        return rng.integers(0, 256, shape, dtype=np.uint8), None, "synthetic"
    paths = find_images(check_images)
    if len(paths) > MAX_CHECK_IMAGES:  # an even spread keeps the check quick on big folders
        paths = [paths[i] for i in np.linspace(0, len(paths) - 1, MAX_CHECK_IMAGES).astype(int)]
    pixels, labels = [], []
    for path in paths:
        try:
            pixels.append(load_image(path, size=size, channels=spec.channels))
        except UnreadableImageError as exc:
            log.warning("check image skipped: %s", exc)
            continue
        parent = Path(path).parent.name
        labels.append(spec.class_names.index(parent) if parent in spec.class_names else -1)
    if not pixels:
        raise MedsightError(f"none of the {len(paths)} check images could be read")
    known = np.array(labels) if min(labels) >= 0 else None
    return np.stack(pixels), known, "real"


def parity(
    bundle: Bundle, candidate: OnnxPredictor, pixels: np.ndarray, atol: float = LOGIT_TOLERANCE
) -> dict[str, Any]:
    """Compare ``candidate`` with PyTorch; raises MedsightError, with the numbers, on mismatch."""
    spec = bundle.spec
    (expected, expected_d), (got, got_d) = bundle.outputs(pixels), candidate.outputs(pixels)
    diff = float(np.abs(expected - got).max())
    decisions = [spec.decide(spec.probabilities(logits)) for logits in (expected, got)]
    differ = int((decisions[0] != decisions[1]).sum())
    report: dict[str, Any] = {"images": len(pixels), "max_abs_logit_diff": diff}
    domain_differ = 0
    if expected_d is not None:
        if got_d is None:
            raise MedsightError(f"{candidate.path}: the graph lacks the domain guard's output")
        scores = [spec.domain_scores(d, len(pixels)) for d in (expected_d, got_d)]
        report["max_abs_domain_score_diff"] = float(np.abs(scores[0] - scores[1]).max())
        # a score on the threshold itself may fall either way by rounding: not a disagreement
        near = np.abs(scores[0] - 1.0) < 1e-4
        domain_differ = int((((scores[0] <= 1) != (scores[1] <= 1)) & ~near).sum())
        report["domain_checks_differ"] = domain_differ
    if not diff <= atol or differ or domain_differ:  # "not <=" also catches NaN
        raise MedsightError(
            f"{candidate.path}: ONNX output differs from PyTorch on {len(pixels)} images: "
            f"max |logit difference| {diff:.3g} (tolerance {atol:g}), {differ} of "
            f"{len(pixels)} decisions and {domain_differ} domain checks differ; the export "
            "was not kept"
        )
    return {**report, "decisions_differ": differ}


def _quantize(
    fp32: Path,
    spec: BundleSpec,
    pixels: np.ndarray,
    labels: np.ndarray | None,
    provenance: dict[str, str],
) -> dict[str, Any]:
    """Dynamic int8 weights beside the fp32 graph, with how much the decisions change."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = int8_path(fp32)
    tmp = temp_beside(target)
    graph = onnx.load(fp32)
    # The exporter records the weights' shapes; the quantiser transposes Gemm weights without
    # updating them, and its shape inference then fails. Shapes are re-inferred without them.
    del graph.graph.value_info[:]
    try:
        with _quiet():
            quantize_dynamic(graph, tmp, weight_type=QuantType.QInt8)
        pair = [OnnxPredictor(path, spec) for path in (fp32, tmp)]
        probs = [p.predict_proba(pixels) for p in pair]
        decisions = [spec.decide(p) for p in probs]
        report: dict[str, Any] = {
            "images": len(pixels),
            "agreement": float((decisions[0] == decisions[1]).mean()),
            "max_abs_probability_diff": float(np.abs(probs[0] - probs[1]).max()),
            "size_bytes": {"fp32": fp32.stat().st_size, "int8": tmp.stat().st_size},
        }
        if labels is not None:
            fp32_hits, int8_hits = ((d == labels).mean() for d in decisions)
            report["accuracy"] = {"fp32": float(fp32_hits), "int8": float(int8_hits)}
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    quantization = {"type": "dynamic int8 weights", **report}
    _write_meta(target, spec, {**provenance, "quantization": quantization})
    return {"path": str(target), **report}


@contextmanager
def _quiet() -> Iterator[None]:
    """Keep the exporter's and quantiser's per-node INFO chatter out of the user's log (the
    quantiser logs through the root logger itself, so only records made there are filtered)."""
    loggers = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir", "torch.onnx")]
    levels = [logger.level for logger in loggers]
    root_filter = logging.Filter("medsight")  # root's own records are not under "medsight"
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    logging.getLogger().addFilter(root_filter)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(root_filter)
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _write_meta(onnx_path: Path, spec: BundleSpec, extra: dict[str, Any]) -> None:
    meta = {
        "format": "medsight-onnx/1",
        "input": {
            "name": INPUT_NAME,
            "layout": "NHWC",
            "dtype": "uint8",
            "shape": ["batch", *spec.image_size, spec.channels],
            "note": "resize to image_size first; normalisation and TTA are in the graph",
        },
        "output": {"name": OUTPUT_NAME, "meaning": "raw logits; softmax(logits / temperature)"},
        "domain_output": {
            "name": DOMAIN_NAME,
            "meaning": "squared Mahalanobis distance from the training images; domain_score = "
            "distance / bundle.domain.threshold, above 1 out of domain",
        }
        if spec.domain is not None
        else None,
        "bundle": spec.model_dump(mode="json"),
        "onnx_sha256": sha256_file(onnx_path),
        "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        **extra,
    }
    atomic_write_text(sidecar(onnx_path), json.dumps(meta, indent=2))


def export_onnx(
    bundle_path: str | Path,
    out: str | Path | None = None,
    quantize: bool = False,
    check_images: list[str | Path] | None = None,
    atol: float = LOGIT_TOLERANCE,
) -> Path:
    """Export a bundle to ONNX (default ``BUNDLE/model.onnx``); returns the graph's path.

    The graph is kept only if it matches PyTorch on ``check_images`` (files or folders; a
    seeded synthetic batch without them): the comparison is recorded in ``model.onnx.json``
    under ``parity``. ``quantize`` also writes ``model.int8.onnx`` (dynamic int8 weights) and
    records in its JSON how often its decisions agree with fp32 (and both accuracies when the
    check images sit in class folders).
    """
    folder = bundle_folder(bundle_path)
    bundle = load_bundle(folder)
    spec = bundle.spec
    target = Path(out) if out else folder / ONNX_NAME
    pixels, labels, source = _check_pixels(spec, check_images)
    wrapper = bundle.graph()
    outputs = [OUTPUT_NAME] if bundle.guard is None else [OUTPUT_NAME, DOMAIN_NAME]
    example = torch.from_numpy(pixels[np.arange(2) % len(pixels)])  # batch 2: not specialised to 1
    tmp = temp_beside(target)
    try:
        with _quiet():
            program = torch.onnx.export(
                wrapper,
                (example,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=outputs,
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                verbose=False,
            )
        program.save(tmp)
        report = parity(bundle, OnnxPredictor(tmp, spec), pixels, atol)
        os.replace(tmp, target)
    except MedsightError:
        raise
    except Exception as exc:  # torch.export raises many kinds; name the model and the cause
        raise MedsightError(f"{spec.model_name}: ONNX export failed: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    weights = {"weights_sha256": sha256_file(folder / "model.safetensors")}
    _write_meta(target, spec, {**weights, "parity": {"source": source, **report}})
    log.info("exported %s (parity on %d %s images: %s)", target, len(pixels), source, report)
    if quantize:
        log.info("int8: %s", _quantize(target, spec, pixels, labels, weights))
    return target
