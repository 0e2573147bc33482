"""The model card (Markdown): what the model is for, what it was trained and tested on, how well
it did with confidence intervals, its threshold and calibration, and what it must not be used for.

It is written into the bundle (so it travels with the weights) and beside every evaluation.
"""

from __future__ import annotations

from typing import Any

from medsight.bundle import BundleSpec
from medsight.bundle.runtime import int8_card_lines
from medsight.config import Recipe
from medsight.evaluation.card_metadata import hub_metadata
from medsight.evaluation.metrics import class_rows
from medsight.evaluation.multilabel import PER_LABEL_HEADER, per_label_rows
from medsight.evaluation.report import (
    BINARY_ROWS,
    MULTICLASS_ROWS,
    MULTILABEL_ROWS,
    figure_text,
    split_line,
)

# What is known of the licences of the public datasets the built-in recipes use.
DATA_LICENCES = {
    "malaria": "NIH/NLM malaria cell images (Rajaraman et al. 2018): public domain (US gov.).",
    "chest_xray": "Kermany et al. 2018 pediatric chest X-rays (Mendeley Data): CC BY 4.0.",
    "covid": "ieee8023 covid-chestxray-dataset: licence per image (see its metadata.csv).",
}


def _figure(metrics: dict[str, Any], key: str) -> str:
    ci = (metrics.get("figures") or {}).get(key) or {}
    return figure_text({**ci, "value": metrics.get(key)})


def _lung_crop_line(spec: BundleSpec) -> list[str]:
    lungs = spec.lung_crop
    if lungs is None:
        return []
    dice = f", Dice {lungs.val_dice:.3f} on held-out masks" if lungs.val_dice is not None else ""
    return [
        f"- Every image is first cropped to its lung field by a U-Net ({lungs.encoder}, "
        f"{lungs.size} px; trained on {lungs.trained_on or 'unknown masks'}{dice}); images "
        "without a believable lung field are left whole"
    ]


def model_card(
    spec: BundleSpec,
    metrics: dict[str, Any],
    recipe: Recipe | None = None,
    audit: dict[str, Any] | None = None,
) -> str:
    """The card as Markdown, opening with the Hugging Face Hub's YAML metadata block;
    ``metrics`` is an evaluation (``metrics.json``) of the bundle."""
    title = spec.recipe or spec.model_name
    data = metrics.get("data") or {}
    source = data.get("source", "unknown")
    licences = [text for key, text in DATA_LICENCES.items() if key in str(source).lower()]
    multilabel = metrics.get("task") == "multilabel"
    lines = [
        f"# Model card: {title}",
        "",
        "**Not for clinical use.** Research software: not a medical device, not validated in a "
        "clinical study. Do not use it to diagnose or treat patients.",
        "",
        "## Intended use",
        _intended_use(spec, metrics)
        + ". Inputs should resemble the training data (same modality, view and preprocessing).",
        "",
        "## Model",
        f"- Architecture: `{spec.model_name}`; input {spec.image_size[0]}x{spec.image_size[1]}, "
        f"{spec.channels} channel(s), mean {list(spec.mean)}, std {list(spec.std)}"
        + ("; every image histogram-equalised first" if spec.exposure == "equalize" else ""),
        *_lung_crop_line(spec),
        f"- Trained by medsight {spec.medsight_version or '(unknown version)'}"
        + (f" with the recipe `{recipe.name}`: {recipe.description}" if recipe else ""),
        *int8_card_lines(spec.metrics),
        "",
        "## Data",
        f"- Source: {source}",
        *(f"- Licence: {text}" for text in licences),
        f"- Split by: {split_line(metrics)}; leakage check: "
        f"{metrics.get('leakage', 'not checked')}",
        "",
        "## Decision threshold and calibration",
        *_decision_lines(spec, multilabel),
        "",
        *domain_lines(spec, metrics.get("domain")),
    ]
    calibration = metrics.get("calibration")
    if calibration:
        lines.append(
            f"- Expected calibration error {calibration['ece_before']:.3f} before, "
            f"{calibration['ece_after']:.3f} after"
        )
    if multilabel:
        rows = MULTILABEL_ROWS
    elif spec.task == "binary":
        rows = BINARY_ROWS
    else:
        rows = MULTICLASS_ROWS + class_rows(spec.class_names)
    lines += [
        "",
        f"## Performance ({metrics.get('split') or 'evaluation'} set, "
        f"{metrics.get('n', 0)} images)",
        "",
        "| Figure | Value |",
        "|---|---|",
        *(f"| {label} | {_figure(metrics, key)} |" for key, label in rows),
    ]
    if multilabel:
        heading = "### Per label (each at its own threshold, on the images it is recorded for)"
        head, rule = " | ".join(PER_LABEL_HEADER), "|" + "---|" * len(PER_LABEL_HEADER)
        table = [f"| {' | '.join(row)} |" for row in per_label_rows(metrics)]
        lines += ["", heading, "", f"| {head} |", rule, *table]
    baselines = metrics.get("baselines")
    if baselines:
        lines.append(
            f"| Baseline: always {baselines['majority_class']} (accuracy) | "
            f"{baselines['majority_accuracy']:.3f} |"
        )
    lines += ["", "## Known limitations"]
    limitations = [
        "Figures come from one dataset; performance on other hospitals, scanners or "
        "populations is unknown until measured (external validation: `medsight evaluate`).",
        *(str(n) for n in metrics.get("notes", [])),
    ]
    if metrics.get("split_warning"):
        limitations.append(str(metrics["split_warning"]))
    limitations += _seen_lines(metrics)
    if audit:
        limitations += [f"Shortcut audit: {w}" for w in audit.get("warnings", [])]
        if not audit.get("warnings"):
            limitations.append(
                "Shortcut audit: no shortcut found by the source and occlusion probes."
            )
    else:
        limitations.append("No shortcut audit run yet (`medsight audit`).")
    lines += [f"- {text}" for text in limitations]
    return hub_metadata(spec, metrics) + "\n".join(lines) + "\n"


def _intended_use(spec: BundleSpec, metrics: dict[str, Any]) -> str:
    if metrics.get("task") == "multilabel":
        findings = ", ".join(metrics.get("labels") or spec.class_names)
        return f"Research on finding {findings} in images, each finding decided on its own"
    disease = f" (disease class: {spec.positive_class})" if spec.task == "binary" else ""
    return f"Research on classifying {', '.join(spec.class_names)} images{disease}"


def _decision_lines(spec: BundleSpec, multilabel: bool) -> list[str]:
    if multilabel:
        return [
            "- Multi-label: one calibrated probability per finding, each decided at its own "
            "threshold (in the per-label table below)",
            "- Temperature scaling: one temperature per finding (fitted on the validation split)",
        ]
    return [
        f"- Threshold {spec.threshold:.4f} on the calibrated probability ({spec.threshold_rule})"
        if spec.task == "binary"
        else "- Multi-class: the most probable class is predicted",
        f"- Temperature scaling: T = {spec.temperature:.3f} (fitted on the validation split)",
    ]


def domain_lines(spec: BundleSpec, summary: dict[str, Any] | None) -> list[str]:
    """The card's domain-check section: what the guard is and how often it fired."""
    lines = ["## Domain check (is an image like the training images?)"]
    if spec.domain is None:
        return [
            *lines,
            "- None: this bundle was made before domain guards; it answers for any "
            "image, including ones unlike its training data. Retrain to add one.",
        ]
    guard = spec.domain
    lines += [
        f"- Mahalanobis distance of {guard.features} from the {guard.fitted_on} training "
        f"images; out of domain above the {guard.quantile:.0%} quantile of the validation "
        f"split ({guard.val_out_of_domain:.1%} of it flagged)",
        "- Predictions of out-of-domain images (`in_domain` false, `domain_score` above 1) are "
        "not to be trusted: the model was never shown images like them",
    ]
    if summary and summary.get("out_of_domain") is not None:
        lines.append(
            f"- On the {summary['split']} set: {summary['flagged']} of {summary['n']} images "
            f"flagged ({summary['out_of_domain']:.1%})"
        )
    return lines


def _seen_lines(metrics: dict[str, Any]) -> list[str]:
    """An evaluation's images the model had seen (or that nobody can tell): never silent."""
    if "seen_in_training" not in metrics:  # a training run's held-out split
        return []
    seen = metrics["seen_in_training"]
    if seen is None:
        return [
            "Whether the evaluated images include ones the model was trained or tuned on is "
            "unknown: the bundle records no training images."
        ]
    if seen:
        return [
            f"{seen} of the {metrics.get('n', 0)} evaluated images were in the model's training "
            "or validation data (same file or same patient): these figures are optimistic "
            "(`--exclude-seen` leaves them out)."
        ]
    return []
