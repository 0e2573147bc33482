"""Scoring a bundle on labelled data: the shared first step of ``evaluate``, ``compare`` and
``audit``, and the whole of ``evaluate`` (external validation included)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medsight.bundle import (
    Bundle,
    BundleSpec,
    default_batch_size,
    load_bundle,
    predictions_frame,
)
from medsight.data.dataset import decode_images
from medsight.data.labels import LabelRule
from medsight.data.sources import ImageTable
from medsight.data.summary import data_summary
from medsight.evaluation.card import model_card
from medsight.evaluation.labelled import LabelledData
from medsight.evaluation.metrics import classification_metrics
from medsight.evaluation.multilabel import multilabel_metrics
from medsight.evaluation.report import write_report
from medsight.evaluation.seen import SEEN_COLUMN, check_seen, hashed, seen_facts
from medsight.evaluation.summary import domain_summary, evaluate_predictions, write_plots
from medsight.fsutil import atomic_write_text
from medsight.progress import Progress

log = logging.getLogger(__name__)


@dataclass
class Scored:
    """A table's readable images, their pixels and the bundle's logits, rows aligned."""

    table: ImageTable
    pixels: np.ndarray
    logits: np.ndarray
    skipped: list[tuple[str, str]]
    domain_score: np.ndarray | None = None  # per image, above 1 out of domain; NaN: no guard

    @property
    def labels(self) -> np.ndarray:
        """Class indices, or a multi-label table's (N, L) targets."""
        return self.table.targets if self.table.multi_label else self.table.labels

    @property
    def patients(self) -> list:
        return list(self.table.frame["patient"])


def score_table(bundle: Bundle, table: ImageTable, batch_size: int | None = None) -> Scored:
    """Decode every image as in training and compute the bundle's logits (unreadable files are
    skipped with their reason), ``batch_size`` images per model call (None: by input size)."""
    spec = bundle.spec
    batch_size = batch_size or default_batch_size(spec.image_size)
    pixels, failures = decode_images(list(table.frame["path"]), spec.image_size, spec.channels)
    bad = {path for path, _ in failures}
    keep = ~table.frame["path"].isin(bad).to_numpy()
    pixels, table = pixels[keep], table.select(keep)
    logits = np.zeros((len(pixels), len(spec.class_names)), dtype=np.float32)
    distances = np.full(len(pixels), np.nan)
    with Progress(len(pixels), "predict", "img") as bar:
        for start in range(0, len(pixels), batch_size):
            chunk = pixels[start : start + batch_size]
            chunk_logits, chunk_distances = bundle.outputs(chunk, batch_size)
            logits[start : start + len(chunk)] = chunk_logits
            if chunk_distances is not None:
                distances[start : start + len(chunk)] = chunk_distances
            bar.update(len(chunk))
    domain_score = spec.domain_scores(distances if spec.domain else None, len(pixels))
    return Scored(table, pixels, logits, table.skipped + failures, domain_score)


def evaluate_bundle(
    bundle_path: str | Path,
    data: LabelledData,
    out: str | Path,
    resamples: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Score a bundle on labelled data; write the evaluation folder (:func:`write_evaluation`)."""
    bundle = load_bundle(bundle_path)
    scored, facts = score_labelled(bundle_path, bundle, data)
    return write_evaluation(Path(out), bundle, scored, facts, resamples, seed)


def score_labelled(
    bundle_path: str | Path, bundle: Bundle, data: LabelledData
) -> tuple[Scored, dict[str, Any]]:
    """The bundle on the labelled data (less the images it saw, with ``data.exclude_seen``),
    and the facts of the evaluation: what was scored, and how much of it the model had seen."""
    spec = bundle.spec
    table = data.load(spec.class_names, LabelRule.of(spec), spec.multi_label)
    table, excluded = check_seen(table, {SEEN_COLUMN: bundle_path}, data.exclude_seen)
    scored = score_table(bundle, table)
    facts = {"bundle": str(bundle_path), "data_path": data.name, "split": data.split}
    facts.update(class_map=dict(data.class_map), **seen_facts(scored.table.frame, excluded))
    return scored, facts


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
    domain_score = scored.domain_score
    if domain_score is None:
        domain_score = spec.domain_scores(None, len(scored.logits))
    metrics.update(domain_metrics(scored, domain_score, spec, facts.get("split") or "evaluated"))
    metrics["title"] = f"{spec.recipe or spec.model_name} on {facts.get('data_path')}"
    metrics["skipped"] = [{"path": p, "reason": r} for p, r in scored.skipped]
    metrics["data"] = data_summary(hashed(scored.table))
    out.mkdir(parents=True, exist_ok=True)
    probs = spec.probabilities(scored.logits)
    frame = predictions_frame(scored.table.frame, probs, spec, domain_score)
    atomic_write_text(out / "predictions.csv", frame.to_csv(index=False))
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    skipped = pd.DataFrame(scored.skipped, columns=["path", "reason"])
    atomic_write_text(out / "skipped.csv", skipped.to_csv(index=False))
    title = facts.get("split") or "evaluated"
    write_plots(
        out / "plots",
        scored.pixels,
        scored.labels,
        probs,
        spec,
        metrics,
        title,
        scored.patients,
    )
    atomic_write_text(out / "model_card.md", model_card(spec, metrics))
    write_report(out)
    return metrics


def domain_metrics(
    scored: Scored, domain_score: np.ndarray, spec: BundleSpec, split: str
) -> dict[str, Any]:
    """``out_of_domain`` (the fraction flagged; None without a guard) and ``domain``: the
    check's summary, with the figures on the in-domain images alone."""
    guard = spec.domain.model_dump() if spec.domain else None
    summary = domain_summary(guard, domain_score, split)
    inside = domain_score <= 1.0
    if guard is not None and inside.any() and not inside.all():
        labels = scored.labels[inside]
        figures = classification_metrics_of(labels, scored.logits[inside], spec)
        summary["in_domain_figures"] = {"n": int(inside.sum()), **figures}
    if summary["out_of_domain"]:
        log.warning(
            "%d of %d images are out of domain (unlike the bundle's training images); their "
            "predictions are not to be trusted (predictions.csv: in_domain=false)",
            summary["flagged"],
            summary["n"],
        )
    return {"out_of_domain": summary["out_of_domain"], "domain": summary}


def classification_metrics_of(
    labels: np.ndarray, logits: np.ndarray, spec: BundleSpec
) -> dict[str, Any]:
    """The headline figures of a subset (no intervals)."""
    probs = spec.probabilities(logits)
    if spec.task == "multilabel":
        found = multilabel_metrics(
            labels, probs, list(spec.label_thresholds), spec.class_names, resamples=0
        )
        keys = ("macro_roc_auc", "micro_roc_auc", "macro_sensitivity", "macro_specificity")
        return {key: found.get(key) for key in keys}
    found = classification_metrics(
        labels, probs, spec.decide(probs), spec.class_names, spec.positive_index
    )
    keys = ("accuracy", "sensitivity", "specificity", "roc_auc", "balanced_accuracy")
    return {key: found.get(key) for key in keys if key in found}
