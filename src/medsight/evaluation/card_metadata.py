"""The Hugging Face Hub's YAML metadata block that opens every model card.

With it, a bundle folder uploaded as a Hub model repository shows its licence, tags, data and
figures (each with its 95 % CI in the metric's ``args``) in the Hub's widgets and search.
``huggingface_hub``'s own :class:`~huggingface_hub.ModelCardData` writes the block, so it follows
the Hub's schema.
"""

from __future__ import annotations

from typing import Any

from huggingface_hub import EvalResult, ModelCardData

from medsight import __version__
from medsight.bundle import BundleSpec

# Dataset names on the Hub card, and the licence a model trained on them can honestly claim,
# for the public datasets the built-in recipes use (matched in the data source's path).
KNOWN_DATASETS = {
    "malaria": ("nih-malaria-cell-images", None),  # public domain (US gov.): no SPDX id
    "chest_xray": ("kermany-pediatric-chest-xray-2018", "cc-by-4.0"),
    "covid": ("ieee8023-covid-chestxray-dataset", None),  # licence per image
}
CARD_FIGURES = ("accuracy", "sensitivity", "specificity", "roc_auc", "pr_auc", "f1")
MULTILABEL_CARD_FIGURES = ("macro_roc_auc", "micro_roc_auc", "macro_pr_auc", "macro_f1")


def hub_metadata(spec: BundleSpec, metrics: dict[str, Any]) -> str:
    """The ``---``-fenced YAML block for a card of ``spec`` evaluated as ``metrics``."""
    source = str((metrics.get("data") or {}).get("source", "")).lower()
    known = [value for key, value in KNOWN_DATASETS.items() if key in source]
    dataset = known[0][0] if known else "custom"
    licence = known[0][1] if known and known[0][1] else "unknown"
    split = metrics.get("split") or "evaluation"
    results = [
        EvalResult(
            task_type="image-classification",
            dataset_type=dataset,
            dataset_name=f"{dataset} ({split} split, {metrics.get('n', 0)} images)",
            dataset_split=split,
            metric_type=key,
            metric_name=name,
            metric_value=round(float(figure["value"]), 4),
            metric_args=_interval(figure),
        )
        for key, name, figure in _card_figures(metrics)
        if figure and figure.get("value") is not None
    ]
    data = ModelCardData(
        library_name="medsight",
        license=licence,
        pipeline_tag="image-classification",
        tags=["medsight", "medical-imaging", "image-classification", spec.task, spec.model_name],
        datasets=[dataset] if known else None,
        metrics=list(dict.fromkeys(r.metric_type for r in results)) or None,
        model_name=spec.recipe or spec.model_name,
        eval_results=results or None,
        medsight_version=spec.medsight_version or __version__,
    )
    return f"---\n{data.to_yaml()}\n---\n"


def _card_figures(metrics: dict[str, Any]) -> list[tuple[str, str | None, dict | None]]:
    """(metric type, display name, figure) of the figures the Hub shows: a multi-label card's
    averages and each label's ROC-AUC (a weak finding is not hidden behind the average)."""
    figures = metrics.get("figures") or {}
    if metrics.get("task") != "multilabel":
        return [(key, None, figures.get(key)) for key in CARD_FIGURES]
    rows = [(key, None, figures.get(key)) for key in MULTILABEL_CARD_FIGURES]
    per_label = metrics.get("per_label") or {}
    return rows + [
        ("roc_auc", f"ROC-AUC ({n})", row.get("roc_auc")) for n, row in per_label.items()
    ]


def _interval(figure: dict[str, Any]) -> dict[str, Any] | None:
    if figure.get("ci_low") is None or figure.get("ci_high") is None:
        return None
    low, high = round(float(figure["ci_low"]), 4), round(float(figure["ci_high"]), 4)
    return {"ci_level": 0.95, "ci_low": low, "ci_high": high}
