"""Export a bundle to ONNX, proven equal to PyTorch on real images before it is kept.

The graph is the bundle's own network (:class:`medsight.bundle.PixelsToLogits`): (N, H, W, C)
uint8 pixels, already resized to the bundle's input size, to its raw logits, with the lung crop,
normalisation and mirror TTA inside; its second output is the domain guard's distance. A runtime
in any language needs only the resize and
``model.onnx.json`` (class names, threshold, temperature).
The batch dimension is dynamic. An export that disagrees with PyTorch (logits beyond the
tolerance, or any decision) is refused with the numbers, never written. Beside it goes the
static int8 model, adopted only behind the accuracy gate of :mod:`medsight.serving.quantize`.
"""

from __future__ import annotations

import dataclasses
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
from medsight.bundle.files import CARD_FILE, SPEC_FILE, write_card
from medsight.bundle.runtime import (
    DOMAIN_NAME,
    INPUT_NAME,
    LOGIT_TOLERANCE,
    ONNX_NAME,
    OUTPUT_NAME,
    int8_card_lines,
    int8_path,
    sha256_file,
    sidecar,
)
from medsight.data.io import find_images, load_image
from medsight.errors import MedsightError, UnreadableImageError
from medsight.fsutil import atomic_write_text, temp_beside
from medsight.serving.quantize import (
    DEFAULT_GATE,
    Gate,
    calibration_images,
    gate_images,
    quantize,
    run_gate,
)

__all__ = ["Gate", "export_onnx", "int8_path", "parity"]

log = logging.getLogger(__name__)
MAX_CHECK_IMAGES = 256
SYNTHETIC_IMAGES = 16


def _check_pixels(
    spec: BundleSpec, check_images: list[str | Path] | None
) -> tuple[np.ndarray, str]:
    """Pixels to compare on: the given images (files or folders), else a seeded synthetic
    batch."""
    size = tuple(spec.image_size)
    if not check_images:
        rng = np.random.default_rng(0)
        shape = (SYNTHETIC_IMAGES, *size, spec.channels)
        return rng.integers(0, 256, shape, dtype=np.uint8), "synthetic"
    paths = find_images(check_images)
    if len(paths) > MAX_CHECK_IMAGES:  # an even spread keeps the check quick on big folders
        paths = [paths[i] for i in np.linspace(0, len(paths) - 1, MAX_CHECK_IMAGES).astype(int)]
    pixels = []
    for path in paths:
        try:
            pixels.append(load_image(path, size=size, channels=spec.channels))
        except UnreadableImageError as exc:
            log.warning("check image skipped: %s", exc)
            continue
    if not pixels:
        raise MedsightError(f"none of the {len(paths)} check images could be read")
    return np.stack(pixels), "real"


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


def _int8(
    fp32: Path,
    folder: Path,
    spec: BundleSpec,
    check_images: list[str | Path] | None,
    calibrate: list[str | Path] | None,
    required: bool,
    gate: Gate,
    weights: dict[str, str],
) -> dict[str, Any]:
    """Build, gate and record the int8 model beside ``fp32``; returns the record (``adopted``
    false with the reason when it was not built or not adopted)."""
    calibration = calibration_images(folder, spec, calibrate)
    if calibration is None:
        why = "no training-split images to calibrate on (export from the run directory or give "
        why += "--calibrate)"
        if required:
            raise MedsightError(f"{folder}: cannot quantise to int8: {why}")
        return {"adopted": False, "reason": f"not built: {why}"}
    target = int8_path(fp32)
    kept_fp32 = quantize(fp32, target, calibration.pixels)
    record: dict[str, Any] = {
        "type": "static int8 (QDQ, uint8 activations, int8 weights)",
        "fp32_nodes": "domain guard" if kept_fp32 else "none",
        "calibration_images": len(calibration.pixels),
        "calibration_source": calibration.source,
        "gate": dataclasses.asdict(gate),
        "size_bytes": {"fp32": fp32.stat().st_size, "int8": target.stat().st_size},
    }
    images, why = gate_images(folder, spec, check_images, set(calibration.hashes))
    if images is None:
        record.update(images=0, adopted=False, reason=f"not gated: {why}")
    else:
        pair = OnnxPredictor(fp32, spec), OnnxPredictor(target, spec)
        record.update(run_gate(spec, *pair, images, gate))
    files = {
        "calibration": calibration.paths,
        "gate": images.paths if images is not None else [],
    }
    extra = {**weights, "fp32_onnx_sha256": sha256_file(fp32)}
    _write_meta(target, spec, {**extra, "quantization": record, "images": files})
    return record


def _record_in_bundle(folder: Path, spec: BundleSpec, record: dict[str, Any]) -> None:
    """The gate's figures in ``bundle.json``'s metrics (where the model card reads them) and
    the card's line under its Model section."""
    updated = spec.model_copy(update={"metrics": {**spec.metrics, "int8": record}})
    atomic_write_text(folder / SPEC_FILE, json.dumps(updated.model_dump(mode="json"), indent=2))
    card = folder / CARD_FILE
    if not card.is_file():
        return
    lines = [x for x in card.read_text().splitlines() if not x.startswith("- int8 (ONNX")]
    if "## Model" in lines:
        end = lines.index("## Model") + 1
        while end < len(lines) and lines[end].startswith("- "):
            end += 1
        lines[end:end] = int8_card_lines(updated.metrics)
        write_card(folder, "\n".join(lines) + "\n")


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
        "output": {
            "name": OUTPUT_NAME,
            "meaning": "raw logits; sigmoid(logits / bundle.label_temperatures), each label at "
            "its bundle.label_thresholds"
            if spec.task == "multilabel"
            else "raw logits; softmax(logits / temperature)",
        },
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
    quantize: bool | None = None,
    check_images: list[str | Path] | None = None,
    atol: float = LOGIT_TOLERANCE,
    calibrate: list[str | Path] | None = None,
    gate: Gate = DEFAULT_GATE,
) -> Path:
    """Export a bundle to ONNX (default ``BUNDLE/model.onnx``); returns the graph's path.

    The graph is kept only if it matches PyTorch on ``check_images`` (files or folders; a
    seeded synthetic batch without them): the comparison is recorded in ``model.onnx.json``
    under ``parity``. Then ``model.int8.onnx`` is written, calibrated on training-split images
    (``calibrate``, else the run's train split) and adopted only if it passes ``gate`` on
    labelled held-out images (:mod:`medsight.serving.quantize`); ``quantize=None`` does this
    when calibration images are at hand, ``True`` requires it, ``False`` skips it. The gate's
    record goes into the int8 model's JSON and, for the bundle's own export, into
    ``bundle.json`` (``metrics["int8"]``) and its model card.
    """
    folder = bundle_folder(bundle_path)
    bundle = load_bundle(folder)
    spec = bundle.spec
    target = Path(out) if out else folder / ONNX_NAME
    pixels, source = _check_pixels(spec, check_images)
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
    if quantize is not False:
        record = _int8(target, folder, spec, check_images, calibrate, bool(quantize), gate, weights)
        log.info("int8 %s: %s", "adopted" if record["adopted"] else "not adopted", record)
        if "calibration_images" in record and target == folder / ONNX_NAME:  # what predict uses
            _record_in_bundle(folder, spec, record)
    return target
