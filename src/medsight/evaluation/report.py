"""The report: one self-contained HTML file (images inline), readable offline.

It is rendered from a folder alone (``metrics.json``, ``plots/``, and when present
``config.yaml``, ``skipped.csv``, ``audit.json``), so ``train``, ``evaluate`` and ``audit`` all
write the same report and a later ``audit`` can add its section to an existing one.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from medsight.config import Recipe, load_recipe
from medsight.data.patients import PatientCoverage
from medsight.evaluation.metrics import class_rows
from medsight.fsutil import atomic_write_text

BINARY_ROWS = [
    ("accuracy", "Accuracy"),
    ("sensitivity", "Sensitivity (recall, disease)"),
    ("specificity", "Specificity"),
    ("ppv", "Precision (PPV)"),
    ("npv", "NPV"),
    ("f1", "F1"),
    ("mcc", "Matthews correlation (MCC)"),
    ("balanced_accuracy", "Balanced accuracy"),
    ("roc_auc", "ROC-AUC"),
    ("pr_auc", "PR-AUC (average precision)"),
    ("brier", "Brier score (lower is better)"),
    ("ece", "Expected calibration error (lower is better)"),
]
MULTICLASS_ROWS = [
    ("accuracy", "Accuracy"),
    ("balanced_accuracy", "Balanced accuracy"),
    ("macro_sensitivity", "Sensitivity (macro)"),
    ("macro_ppv", "Precision (macro)"),
    ("macro_f1", "F1 (macro)"),
    ("micro_f1", "F1 (micro)"),
    ("mcc", "Matthews correlation (MCC)"),
    ("roc_auc", "ROC-AUC (macro, one-vs-rest)"),
    ("micro_roc_auc", "ROC-AUC (micro)"),
    ("brier", "Brier score (lower is better)"),
    ("ece", "Expected calibration error (lower is better)"),
]
MULTILABEL_ROWS = [
    ("macro_roc_auc", "ROC-AUC (macro over labels)"),
    ("micro_roc_auc", "ROC-AUC (micro, every labelled finding pooled)"),
    ("macro_pr_auc", "PR-AUC (macro)"),
    ("micro_pr_auc", "PR-AUC (micro)"),
    ("macro_sensitivity", "Sensitivity (macro)"),
    ("macro_specificity", "Specificity (macro)"),
    ("macro_f1", "F1 (macro)"),
    ("micro_f1", "F1 (micro)"),
    ("label_accuracy", "Label accuracy (labelled findings decided right)"),
]
# each label's rows in the report: (figure in its per_label entry, how the row names it)
LABEL_ROWS = [
    ("prevalence", "prevalence (PR-AUC of a random ranking)"),
    ("threshold", "threshold"),
    ("roc_auc", "ROC-AUC"),
    ("pr_auc", "PR-AUC"),
    ("sensitivity", "sensitivity"),
    ("specificity", "specificity"),
]


def figure_text(figure: dict[str, Any] | None) -> str:
    """A figure as the card writes it: ``0.912 (95 % CI 0.880 to 0.940)``, the value alone
    without an interval, ``n/a`` when it is undefined."""
    value = (figure or {}).get("value")
    if value is None:
        return "n/a"
    if figure.get("ci_low") is None:
        return f"{value:.3f}"
    return f"{value:.3f} (95 % CI {figure['ci_low']:.3f} to {figure['ci_high']:.3f})"


def metric_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """The figures a report or card shows for this evaluation: a multi-class one adds each
    class's and each pair of classes' figures, a multi-label one each label's
    (``<label>_<figure>``: :func:`label_figures`)."""
    if metrics.get("task") == "multilabel":
        labels = metrics.get("labels") or []
        rows = [(f"{name}_{key}", f"{name}: {text}") for name in labels for key, text in LABEL_ROWS]
        return MULTILABEL_ROWS + rows
    if metrics.get("positive_class") is not None:
        return BINARY_ROWS
    return MULTICLASS_ROWS + class_rows(list(metrics.get("class_names") or []))


def label_figures(metrics: dict[str, Any]) -> dict[str, Any]:
    """A multi-label evaluation with each label's figures also flat, as ``<label>_<figure>``
    values and intervals, the way the report's table reads every other figure."""
    if metrics.get("task") != "multilabel":
        return metrics
    flat: dict[str, Any] = {}
    intervals = dict(metrics.get("figures") or {})
    for name, row in (metrics.get("per_label") or {}).items():
        for key, value in row.items():
            if isinstance(value, dict):
                flat[f"{name}_{key}"], intervals[f"{name}_{key}"] = value.get("value"), value
            else:
                flat[f"{name}_{key}"] = value
        flat[f"{name}_prevalence"] = row["positives"] / row["n"] if row.get("n") else None
    return {**metrics, **flat, "figures": intervals}


PLOTS = (
    "curves",
    "confusion_matrix",
    "roc_pr",
    "roc_per_label",
    "reliability",
    "worst_errors",
    "predictions",
)


def split_line(metrics: dict[str, Any]) -> str:
    """What the split was made by, naming the images split one by one for want of a patient id
    (the card and the report say the same, so neither claims a patient split not made)."""
    split_by = metrics.get("split_by")
    if not split_by:
        return "n/a"
    without = metrics.get("images_without_patient") or 0
    n_images = (metrics.get("data") or {}).get("n_images")
    if not without or not n_images or split_by == "patient":
        return str(split_by)
    line = f"{split_by}: split by image for {without} of {n_images} images (no patient id)"
    return line + (", by patient for the rest" if split_by == "mixed" else "")


def _patient_ids(data: dict[str, Any] | None) -> str | None:
    if not data or data.get("patient_ids") is None:
        return None
    text = PatientCoverage(data["n_images"], data["patient_ids"]).text()
    return text[0].upper() + text[1:]


def _inline_png(path: Path) -> str | None:
    if not path.is_file():
        return None
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def recipe_of(folder: Path) -> Recipe | None:
    """The resolved recipe of a run directory (None for an evaluation folder)."""
    config = folder / "config.yaml"
    return load_recipe(str(config)) if config.is_file() else None


def _skipped(folder: Path) -> list[tuple[str, str]]:
    path = folder / "skipped.csv"
    if not path.is_file() or path.stat().st_size == 0:
        return []
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    return list(frame[["path", "reason"]].itertuples(index=False, name=None))


def write_report(folder: Path, title: str | None = None) -> Path:
    """Render ``folder/report.html`` from what the folder holds."""
    metrics = json.loads((folder / "metrics.json").read_text())
    recipe = recipe_of(folder)
    held_out = metrics.get("split") or "evaluated"
    splits = {held_out: label_figures(metrics)}
    if metrics.get("val") and held_out != "val":
        splits = {"val": label_figures(metrics["val"]), **splits}
    template = jinja2.Template(
        (resources.files("medsight") / "evaluation" / "templates" / "report.html").read_text(),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    leakage = metrics.get("leakage") or "not checked"
    html = template.render(
        title=title or metrics.get("title") or (recipe.name if recipe else "evaluation"),
        recipe=recipe,
        published=recipe.published if recipe else None,
        created=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        metrics=metrics,
        held_out=held_out,
        splits=splits,
        metric_rows=metric_rows(metrics),
        data=metrics.get("data"),
        leakage=leakage,
        leakage_ok=leakage.startswith("no patient") and metrics.get("split_by") == "patient",
        split=split_line(metrics),
        patient_ids=_patient_ids(metrics.get("data")),
        skipped=_skipped(folder),
        audit=_read_json(folder / "audit.json"),
        images={name: _inline_png(folder / "plots" / f"{name}.png") for name in PLOTS},
    )
    atomic_write_text(folder / "report.html", html)
    return folder / "report.html"
