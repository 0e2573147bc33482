"""Scoring a bundle on labelled data: the shared first step of ``evaluate``, ``compare`` and
``audit``, and the whole of ``evaluate`` (external validation included: any folder, CSV or
metadata sheet, with class names mapped onto the bundle's)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medsight.data.dataset import decode_images
from medsight.data.io import content_sha256
from medsight.data.sources import ImageTable, load_table
from medsight.errors import DataError
from medsight.evaluation.card import model_card
from medsight.evaluation.report import data_summary, write_report
from medsight.evaluation.summary import evaluate_predictions, write_plots
from medsight.fsutil import atomic_write_text
from medsight.progress import Progress
from medsight.serving.bundle import Bundle, load_bundle, softmax
from medsight.serving.predictor import predictions_frame


@dataclass
class Scored:
    """A table's readable images, their pixels and the bundle's logits, rows aligned."""

    table: ImageTable
    pixels: np.ndarray
    logits: np.ndarray
    skipped: list[tuple[str, str]]

    @property
    def labels(self) -> np.ndarray:
        return self.table.labels

    @property
    def patients(self) -> list:
        return list(self.table.frame["patient"])


def parse_class_map(text: str | None) -> dict[str, str]:
    """``"COVID-19=COVID,No Finding=normal"`` -> ``{"COVID-19": "COVID", ...}``."""
    if not text:
        return {}
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    if any(len(pair) != 2 or not pair[0].strip() or not pair[1].strip() for pair in pairs):
        raise DataError(f"--class-map {text!r}: use DATA_CLASS=MODEL_CLASS pairs, comma-separated")
    return {a.strip(): b.strip() for a, b in pairs}


def align_classes(
    table: ImageTable,
    class_names: list[str],
    class_map: dict[str, str] | None = None,
    drop_unknown: bool = False,
) -> ImageTable:
    """The table with labels renamed by ``class_map`` and indexed like the model's classes.

    Labels the model does not know are an error naming them, or dropped with ``drop_unknown``
    (e.g. a metadata sheet that lists findings the model was never trained on).
    """
    class_map = class_map or {}
    bad_targets = sorted(set(class_map.values()) - set(class_names))
    if bad_targets:
        raise DataError(
            f"class map targets {bad_targets} are not classes of the model {class_names}"
        )
    frame = table.frame.assign(label=table.frame["label"].replace(class_map))
    unknown = sorted(set(frame["label"]) - set(class_names))
    if unknown and not drop_unknown:
        raise DataError(
            f"{table.source}: classes {unknown} are not known to the model (it predicts "
            f"{class_names}); map them with --class-map DATA=MODEL or leave them out with "
            "--drop-unknown-classes"
        )
    frame = frame[frame["label"].isin(class_names)].reset_index(drop=True)
    if frame.empty:
        raise DataError(f"{table.source}: no images of the model's classes {class_names}")
    return ImageTable(frame, list(class_names), table.source, table.skipped)


def load_labelled(
    data: str | Path,
    class_names: list[str],
    split: str | None = None,
    class_map: dict[str, str] | None = None,
    drop_unknown: bool = False,
) -> ImageTable:
    """Load labelled data, keep one split if asked, align its classes with the model's."""
    table = load_table(data)
    if split:
        present = sorted(table.frame["split"].dropna().unique())
        if split not in present:
            raise DataError(f"{data}: no images in split {split!r} (splits present: {present})")
        table = table.subset(split)
    return align_classes(table, class_names, class_map, drop_unknown)


def hashed(table: ImageTable) -> ImageTable:
    """The table with each file's SHA-256 (for the duplicate count of the report)."""
    if "sha256" in table.frame:
        return table
    frame = table.frame.assign(sha256=[content_sha256(p) for p in table.frame["path"]])
    return ImageTable(frame, table.class_names, table.source, table.skipped)


def score_table(bundle: Bundle, table: ImageTable, batch_size: int = 64) -> Scored:
    """Decode every image as in training and compute the bundle's logits (unreadable files are
    skipped with their reason)."""
    spec = bundle.spec
    pixels, failures = decode_images(list(table.frame["path"]), spec.image_size, spec.channels)
    bad = {path for path, _ in failures}
    keep = ~table.frame["path"].isin(bad).to_numpy()
    pixels, table = pixels[keep], table.select(keep)
    logits = np.zeros((len(pixels), len(spec.class_names)), dtype=np.float32)
    with Progress(len(pixels), "predict", "img") as bar:
        for start in range(0, len(pixels), batch_size):
            chunk = pixels[start : start + batch_size]
            logits[start : start + len(chunk)] = bundle.logits(chunk, batch_size)
            bar.update(len(chunk))
    return Scored(table, pixels, logits, table.skipped + failures)


def evaluate_bundle(
    bundle_path: str | Path,
    data: str | Path,
    out: str | Path,
    split: str | None = None,
    class_map: dict[str, str] | None = None,
    drop_unknown: bool = False,
    resamples: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Score a bundle on labelled data; write the evaluation folder (:func:`write_evaluation`)."""
    bundle = load_bundle(bundle_path)
    table = load_labelled(data, bundle.spec.class_names, split, class_map, drop_unknown)
    facts = {"bundle": str(bundle_path), "data_path": str(data), "split": split}
    return write_evaluation(
        Path(out),
        bundle,
        score_table(bundle, table),
        facts | {"class_map": class_map or {}},
        resamples,
        seed,
    )


def write_evaluation(
    out: Path,
    bundle: Bundle,
    scored: Scored,
    facts: dict[str, Any],
    resamples: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """``metrics.json``, ``predictions.csv``, ``skipped.csv``, ``plots/``, ``model_card.md`` and
    ``report.html`` for one scored table."""
    spec = bundle.spec
    metrics = evaluate_predictions(
        scored.labels, scored.logits, spec, scored.patients, resamples, seed
    )
    metrics.update(facts)
    metrics["title"] = f"{spec.recipe or spec.model_name} on {facts.get('data_path')}"
    metrics["skipped"] = [{"path": p, "reason": r} for p, r in scored.skipped]
    metrics["data"] = data_summary(hashed(scored.table))
    out.mkdir(parents=True, exist_ok=True)
    probs = softmax(scored.logits, spec.temperature)
    frame = predictions_frame(scored.table.frame, probs, spec)
    atomic_write_text(out / "predictions.csv", frame.to_csv(index=False))
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    skipped = pd.DataFrame(scored.skipped, columns=["path", "reason"])
    atomic_write_text(out / "skipped.csv", skipped.to_csv(index=False))
    title = facts.get("split") or "evaluated"
    write_plots(
        out / "plots",
        scored.pixels,
        scored.labels,
        scored.logits,
        spec,
        metrics,
        title,
        scored.patients,
    )
    atomic_write_text(out / "model_card.md", model_card(spec, metrics))
    write_report(out)
    return metrics
