"""Static int8 (QDQ) beside the fp32 export, adopted only when an accuracy gate passes.

ONNX Runtime's ``quantize_static`` calibrates the activations' ranges on training-split images
(``RUN/splits.csv``'s train split when the bundle sits in its run directory, else images the
user gives). The gate then runs fp32 and int8 on labelled held-out images none of which was a
calibration image (the user's check images when they sit in class folders, else the run's val
and test splits) and adopts the int8 model only when the decisions agree on at least 99 % of
them, the domain checks too, and ROC-AUC moves by at most 0.005. Without labelled held-out
images the int8 model is written but not adopted, saying why.

The domain guard's nodes stay fp32: quantising its feature network or its Mahalanobis distance
flipped about a quarter of the in/out-of-domain verdicts of a real malaria bundle (measured on
200 cells: 75.5 % agreement with the whole graph in int8, 76 % with only the distance in fp32,
100 % with the guard left out).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medsight.bundle import BundleSpec, OnnxPredictor
from medsight.bundle.runtime import INPUT_NAME
from medsight.data.io import content_sha256, find_images, load_image
from medsight.errors import MedsightError, UnreadableImageError
from medsight.fsutil import temp_beside

__all__ = [
    "DEFAULT_GATE",
    "Gate",
    "GateImages",
    "calibration_images",
    "gate_images",
    "quantize",
    "run_gate",
]

log = logging.getLogger(__name__)
MAX_CALIBRATION = 128  # MinMax ranges settle well before this; more only costs export time
MAX_GATE = 512
GUARD_SCOPE = "'guard'"  # the domain guard's nodes carry it in their exporter name scopes


@dataclass(frozen=True)
class Gate:
    """When int8 is adopted: decisions (and domain checks) agree on at least ``min_agreement``
    of the held-out images, ROC-AUC changes by at most ``max_auc_change``, and it predicts at
    least ``min_speedup`` times as many images per second as fp32 on this machine."""

    min_agreement: float = 0.99
    max_auc_change: float = 0.005
    # and it must be faster: on small CNNs ONNX Runtime's QDQ kernels measured 0.5-0.9x fp32 here
    min_speedup: float = 1.1


DEFAULT_GATE = Gate()


@dataclass(frozen=True)
class GateImages:
    """Decoded images with their content hashes, labels (class indices; None: unlabelled) and
    a line saying where they came from."""

    pixels: np.ndarray
    hashes: list[str]
    paths: list[str]
    labels: np.ndarray | None
    source: str


def _spread(items: list[Any], n: int) -> list[Any]:
    """An even spread of at most ``n`` items (keeps both classes of a sorted list)."""
    if len(items) <= n:
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, n).astype(int)]


def _decode(paths: list[str], spec: BundleSpec, labels: list[int] | None, source: str):
    pixels, kept, kept_labels = [], [], []
    for i, path in enumerate(paths):
        try:
            pixels.append(load_image(path, tuple(spec.image_size), spec.channels))
        except UnreadableImageError as exc:
            log.warning("int8: image skipped: %s", exc)
            continue
        kept.append(path)
        if labels is not None:
            kept_labels.append(labels[i])
    if not pixels:
        return None
    stacked = np.stack(pixels)
    hashes = [content_sha256(p) for p in kept]
    known = np.array(kept_labels) if labels is not None else None
    return GateImages(stacked, hashes, kept, known, source)


def _run_splits(folder: Path) -> pd.DataFrame | None:
    """The run's ``splits.csv`` when the bundle is ``RUN/bundle``; None otherwise."""
    path = folder.parent / "splits.csv"
    if folder.name != "bundle" or not path.is_file():
        return None
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def calibration_images(
    folder: Path, spec: BundleSpec, given: list[str | Path] | None
) -> GateImages | None:
    """Training-split images to calibrate on: the given ones, else the run's train split."""
    if given:
        paths = _spread(find_images(given), MAX_CALIBRATION)
        return _decode(paths, spec, None, f"{len(paths)} given training images")
    splits = _run_splits(folder)
    if splits is None:
        return None
    train = splits[splits["split"] == "train"]
    paths = _spread(sorted(train["path"]), MAX_CALIBRATION)
    return _decode(paths, spec, None, f"{folder.parent / 'splits.csv'} train split")


def gate_images(
    folder: Path, spec: BundleSpec, check: list[str | Path] | None, calibration: set[str]
) -> tuple[GateImages | None, str]:
    """Labelled held-out images none of which was a calibration image (by content hash): the
    check images in class folders, else the run's val and test splits; and why none if so."""
    if spec.task == "multilabel":
        return None, "the gate scores one label per image; a multi-label bundle stays fp32"
    names = spec.class_names
    candidates: list[tuple[str, int]] = []
    source = ""
    if check:
        found = find_images(check)
        if all(Path(p).parent.name in names for p in found):
            candidates = [(p, names.index(Path(p).parent.name)) for p in found]
            source = "check images"
    if not candidates and (splits := _run_splits(folder)) is not None:
        held = splits[splits["split"].isin(["val", "test"]) & splits["label"].isin(names)]
        candidates = [(p, names.index(c)) for p, c in zip(held["path"], held["label"], strict=True)]
        source = f"{folder.parent / 'splits.csv'} val and test splits"
    if not candidates:
        return None, (
            "no labelled held-out images to gate it on (give --check images in class folders, "
            "or export from the run directory)"
        )
    candidates = _spread(sorted(candidates), MAX_GATE)
    paths, labels = [p for p, _ in candidates], [c for _, c in candidates]
    images = _decode(paths, spec, labels, source)
    if images is None:
        return None, f"none of the {len(paths)} held-out images could be read"
    fresh = np.array([h not in calibration for h in images.hashes])
    if not fresh.all():
        log.warning("int8: %d gate images were calibration images; left out", (~fresh).sum())
    if not fresh.any():
        return None, "every held-out image was also a calibration image"
    kept = GateImages(
        images.pixels[fresh],
        [h for h, f in zip(images.hashes, fresh, strict=True) if f],
        [p for p, f in zip(images.paths, fresh, strict=True) if f],
        images.labels[fresh] if images.labels is not None else None,
        source,
    )
    return kept, ""


def _batches(pixels: np.ndarray, size: int = 16) -> Iterator[dict[str, np.ndarray]]:
    for i in range(0, len(pixels), size):
        yield {INPUT_NAME: np.ascontiguousarray(pixels[i : i + size])}


def quantize(fp32: Path, target: Path, calibration: np.ndarray) -> list[str]:
    """Write the QDQ int8 model of ``fp32`` to ``target`` (atomically); returns the names of
    the nodes left in fp32 (the domain guard's)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = _batches(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    graph = onnx.load(fp32)
    # The exporter records the weights' shapes; the quantiser's transposes leave them stale and
    # its shape inference then fails, so they are re-inferred from scratch.
    del graph.graph.value_info[:]
    guard = [
        node.name
        for node in graph.graph.node
        if any(
            p.key == "pkg.torch.onnx.name_scopes" and GUARD_SCOPE in p.value
            for p in node.metadata_props
        )
    ]
    tmp = temp_beside(target)
    with tempfile.TemporaryDirectory() as scratch:
        stripped = Path(scratch) / "fp32.onnx"  # a path: a ModelProto makes it write external data
        onnx.save(graph, stripped)
        try:
            quantize_static(
                stripped,
                tmp,
                Reader(),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,  # ONNX Runtime's advice for x86 with VNNI
                weight_type=QuantType.QInt8,
                # per-channel weights halved the probability error of a small CNN (0.0097 to
                # 0.0048 on 120 X-rays) and made the gate pass where per-tensor failed it
                per_channel=True,
                # 7-bit weights: x86 CPUs without VNNI (AVX2, AVX-512 without VNNI) multiply
                # u8 x s8 with VPMADDUBSW, whose 16-bit sums saturate on full-range weights;
                # an int8 model adopted on one server may be served on another
                reduce_range=True,
                nodes_to_exclude=guard or None,
            )
            os.replace(tmp, target)
        except Exception as exc:  # the quantiser raises many kinds; name the model
            raise MedsightError(f"{fp32}: int8 quantisation failed: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)
    return guard


def _auc(spec: BundleSpec, labels: np.ndarray, probs: np.ndarray) -> float | None:
    """ROC-AUC (binary: of the disease class; else one-vs-rest macro); None when a class is
    missing from the labels."""
    from sklearn.metrics import roc_auc_score

    if len(np.unique(labels)) < len(spec.class_names):
        return None
    if spec.positive_index is not None:
        return float(roc_auc_score(labels == spec.positive_index, probs[:, spec.positive_index]))
    return float(roc_auc_score(labels, probs, multi_class="ovr", labels=range(probs.shape[1])))


def _speedup(
    fp32: OnnxPredictor, int8: OnnxPredictor, pixels: np.ndarray, rounds: int = 3
) -> dict[str, float]:
    """Images per second of each model on the same batch (up to 64 gate images), best of
    ``rounds`` alternating runs so that a busy moment hurts neither more."""
    batch = pixels[:64]
    best = {"fp32": 0.0, "int8": 0.0}
    for _ in range(rounds):
        for name, model in (("fp32", fp32), ("int8", int8)):
            start = time.perf_counter()
            model.outputs(batch)
            best[name] = max(best[name], len(batch) / (time.perf_counter() - start))
    return {
        "fp32_images_per_s": round(best["fp32"], 1),
        "int8_images_per_s": round(best["int8"], 1),
        "int8_over_fp32": round(best["int8"] / best["fp32"], 3),
    }


def run_gate(
    spec: BundleSpec, fp32: OnnxPredictor, int8: OnnxPredictor, images: GateImages, gate: Gate
) -> dict[str, Any]:
    """The gate's figures and verdict (``adopted``, ``reason``) on ``images``."""
    (l32, d32), (l8, d8) = fp32.outputs(images.pixels), int8.outputs(images.pixels)
    p32, p8 = spec.probabilities(l32), spec.probabilities(l8)
    n = len(images.pixels)
    agreement = float((spec.decide(p32) == spec.decide(p8)).mean())
    report: dict[str, Any] = {
        "images": n,
        "source": images.source,
        "agreement": agreement,
        "max_abs_probability_diff": float(np.abs(p32 - p8).max()),
    }
    failures = []
    if agreement < gate.min_agreement:
        failures.append(f"decisions agree on {agreement:.1%} (needs {gate.min_agreement:.0%})")
    if d32 is not None:
        s32, s8 = spec.domain_scores(d32, n), spec.domain_scores(d8, n)
        report["domain_agreement"] = float(((s32 <= 1) == (s8 <= 1)).mean())
        if report["domain_agreement"] < gate.min_agreement:
            failures.append(f"domain checks agree on {report['domain_agreement']:.1%}")
    auc32 = _auc(spec, images.labels, p32)
    auc8 = _auc(spec, images.labels, p8)
    if auc32 is None or auc8 is None:
        report["roc_auc"] = None
        failures.append("ROC-AUC needs held-out images of every class")
    else:
        change = abs(auc8 - auc32)
        report["roc_auc"] = {"fp32": auc32, "int8": auc8, "change": change}
        if not change <= gate.max_auc_change:
            failures.append(f"ROC-AUC changes by {change:.4f} (at most {gate.max_auc_change})")
    speed = _speedup(fp32, int8, images.pixels)
    report["speed"] = speed
    if not speed["int8_over_fp32"] >= gate.min_speedup:
        failures.append(
            f"int8 predicts at {speed['int8_over_fp32']:.2f}x fp32's speed here "
            f"(needs {gate.min_speedup}x)"
        )
    report["adopted"] = not failures
    report["reason"] = (
        f"passed the gate on {n} held-out images" if not failures else "; ".join(failures)
    )
    return report
