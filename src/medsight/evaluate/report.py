"""The run report: one self-contained HTML file (images inline), readable offline."""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from medsight.config import Recipe
from medsight.data.sources import ImageTable
from medsight.fsutil import atomic_write_text

METRIC_ROWS = [
    ("accuracy", "Accuracy"),
    ("sensitivity", "Sensitivity (recall, disease)"),
    ("specificity", "Specificity"),
    ("ppv", "Precision (PPV)"),
    ("npv", "NPV"),
    ("f1", "F1"),
    ("balanced_accuracy", "Balanced accuracy"),
    ("roc_auc", "ROC-AUC"),
]


def _inline_png(path: Path) -> str | None:
    if not path.is_file():
        return None
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def data_summary(table: ImageTable) -> dict[str, Any]:
    """Counts per split and class, patients per split, for the report and ``data inspect``."""
    frame = table.frame.assign(split=table.frame["split"].fillna("(none)"))
    counts = pd.crosstab(frame["split"], frame["label"]).reindex(
        columns=table.class_names, fill_value=0
    )
    patients = frame[frame["patient"].notna()].groupby("split")["patient"].nunique()
    return {
        "splits": [
            {
                "split": s,
                "counts": [int(counts.loc[s, c]) for c in table.class_names],
                "total": int(counts.loc[s].sum()),
                "patients": int(patients.get(s, 0)),
            }
            for s in counts.index
        ],
        "class_names": table.class_names,
        "n_images": len(frame),
        "n_patients": int(frame["patient"].nunique()),
    }


def write_run_report(
    out: Path,
    recipe: Recipe,
    table: ImageTable,
    metrics: dict[str, Any],
    skipped: list[tuple[str, str]],
    split_warning: str | None,
) -> Path:
    template = jinja2.Template(
        (resources.files("medsight") / "evaluate" / "templates" / "run_report.html").read_text(),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    splits = {
        name: metrics.get(name) if name != metrics["split"] else metrics for name in ("val", "test")
    }
    html = template.render(
        recipe=recipe,
        created=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        metrics=metrics,
        splits={k: v for k, v in splits.items() if v},
        metric_rows=METRIC_ROWS,
        data=data_summary(table),
        source=table.source,
        leakage=table.frame.attrs.get("leakage", "not checked"),
        split_warning=split_warning,
        skipped=skipped,
        images={
            name: _inline_png(out / "plots" / f"{name}.png")
            for name in ("curves", "confusion_matrix", "predictions")
        },
    )
    atomic_write_text(out / "report.html", html)
    return out / "report.html"
