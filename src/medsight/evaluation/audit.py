"""Shortcut audit: is the model looking at the disease, or at where the image came from?

Two probes (DeGrave et al. 2021 found COVID models that read hospital marks and borders):

- *Source probe*: a logistic regression on the model's own penultimate features, trained by
  patient-grouped cross-validation to tell the image sources apart. A high ROC-AUC means the
  features carry the source; when classes coincide with sources (tutorial (d) of
  docs/tutorials.md: COVID-19 from one collection, normals from Kermany) the disease cannot be
  separated from the source at all.
- *Occlusion probe*: the model on images with the central region (lungs, cell body) masked and
  with the borders masked. A model that stays accurate without the anatomy uses something else.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from medsight.bundle import Bundle, bundle_folder, default_batch_size, load_bundle, write_card
from medsight.data.sources import ImageTable
from medsight.errors import DataError
from medsight.evaluation.card import model_card
from medsight.evaluation.labelled import LabelledData
from medsight.evaluation.report import recipe_of, write_report
from medsight.evaluation.scoring import score_labelled, write_evaluation
from medsight.fsutil import atomic_write_text

CENTER_FRACTION = 0.6  # the central box spans 60 % of the height and of the width
SOURCE_AUC_WARNING = 0.80
# still this good with the centre hidden, and at most this much worse than intact: the model
# does not need the anatomy
OCCLUSION_AUC_WARNING = 0.75
OCCLUSION_DROP = 0.10
COINCIDE_SHARE = 0.9


@torch.no_grad()
def penultimate_features(
    bundle: Bundle, pixels: np.ndarray, batch_size: int | None = None
) -> np.ndarray:
    """The input of the model's last linear layer (its image representation), per image."""
    batch_size = batch_size or default_batch_size(bundle.spec.image_size)
    linears = [m for m in bundle.model.modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise DataError(f"{bundle.spec.model_name}: no linear classifier layer to probe")
    captured: list[torch.Tensor] = []
    hook = linears[-1].register_forward_hook(
        lambda _m, inputs, _out: captured.append(inputs[0].flatten(1).float())
    )
    try:
        for start in range(0, len(pixels), batch_size):
            bundle.model(bundle.to_input(pixels[start : start + batch_size]))
    finally:
        hook.remove()
    return torch.cat(captured).numpy() if captured else np.zeros((0, 0))


def class_by_source(table: ImageTable, sources: pd.Series) -> list[dict[str, Any]]:
    names = sorted(sources.unique())
    rows = []
    for i, name in enumerate(table.class_names):
        counts = sources[table.labels == i].value_counts()
        rows.append({"class": name, "counts": [int(counts.get(s, 0)) for s in names]})
    return rows


def source_probe(
    bundle: Bundle, table: ImageTable, pixels: np.ndarray, sources: pd.Series, seed: int = 0
) -> dict[str, Any]:
    """Out-of-fold ROC-AUC of a linear probe that predicts the source from the features."""
    counts = sources.value_counts()
    result: dict[str, Any] = {
        "method": "logistic regression on the model's penultimate features, "
        "5-fold cross-validation grouped by patient",
        "sources": {str(k): int(v) for k, v in sorted(counts.items())},
        "class_by_source": class_by_source(table, sources),
    }
    if len(counts) < 2 or counts.min() < 5:
        result.update(auc=None, reason="needs at least two sources with 5 or more images each")
        return result
    features = penultimate_features(bundle, pixels)
    codes, _ = pd.factorize(sources, sort=True)
    folds = min(5, int(counts.min()))
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    groups = table.frame["patient"].fillna(pd.Series(range(len(table)))).astype(str)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    oof = cross_val_predict(
        probe, features, codes, groups=groups, cv=splitter, method="predict_proba"
    )
    if len(counts) == 2:
        auc = roc_auc_score(codes, oof[:, 1])
    else:
        auc = roc_auc_score(codes, oof, multi_class="ovr")
    result["auc"] = float(auc)
    return result


def coinciding_sources(table: ImageTable, sources: pd.Series) -> str | None:
    """A sentence when each class comes (almost) only from its own source, else None."""
    main = {}
    for i, name in enumerate(table.class_names):
        share = sources[table.labels == i].value_counts(normalize=True)
        if share.empty or share.iloc[0] < COINCIDE_SHARE:
            return None
        main[name] = share.index[0]
    if len(set(main.values())) < len(main):
        return None
    pairs = ", ".join(f"{c} from {s}" for c, s in main.items())
    return (
        f"classes coincide with sources ({pairs}): a model can score well by recognising the "
        "source instead of the disease, and these figures cannot tell the two apart"
    )


def mask(pixels: np.ndarray, region: str, fraction: float = CENTER_FRACTION) -> np.ndarray:
    """Copies with the central box (``region="center"``) or all but it (``"border"``) filled
    with the mean grey level of the images (a neutral value, not black)."""
    out = pixels.copy()
    h, w = pixels.shape[1:3]
    top, left = round(h * (1 - fraction) / 2), round(w * (1 - fraction) / 2)
    inside = np.zeros((h, w), dtype=bool)
    inside[top : h - top, left : w - left] = True
    hidden = inside if region == "center" else ~inside
    out[:, hidden] = pixels.reshape(-1, pixels.shape[-1]).mean(axis=0).round().astype(np.uint8)
    return out


def occlusion_probe(bundle: Bundle, labels: np.ndarray, pixels: np.ndarray) -> dict[str, Any]:
    """Accuracy and ROC-AUC on intact images, with the centre masked and with borders masked."""
    spec = bundle.spec
    results = {}
    for name, images in (
        ("intact", pixels),
        ("center_masked", mask(pixels, "center")),
        ("border_masked", mask(pixels, "border")),
    ):
        probs = bundle.predict_proba(images)
        predicted = spec.decide(probs)
        row: dict[str, float | None] = {"accuracy": float((predicted == labels).mean())}
        if len(np.unique(labels)) < len(spec.class_names):
            row["roc_auc"] = None
        elif spec.positive_index is not None:
            row["roc_auc"] = float(
                roc_auc_score(labels == spec.positive_index, probs[:, spec.positive_index])
            )
        else:
            row["roc_auc"] = float(roc_auc_score(labels, probs, multi_class="ovr"))
        results[name] = row
    return {
        "description": f"The central box spans {CENTER_FRACTION:.0%} of the height and width "
        "(lungs of a PA chest X-ray, the body of a cell); masked areas are filled with the mean "
        "grey level. A model that stays accurate with the centre masked does not need the "
        "anatomy to decide.",
        "center_fraction": CENTER_FRACTION,
        "results": results,
    }


def audit_findings(source: dict[str, Any], occlusion: dict[str, Any], coincide: str | None) -> list:
    """The warnings the probes raise, in words."""
    warnings = []
    if coincide:
        warnings.append(coincide)
    if source.get("auc") is not None and source["auc"] >= SOURCE_AUC_WARNING:
        warnings.append(
            f"the model's features tell the image sources apart (probe ROC-AUC "
            f"{source['auc']:.2f}): it may have learned where an image came from"
        )
    center, intact = occlusion["results"]["center_masked"], occlusion["results"]["intact"]
    if (
        center["roc_auc"] is not None
        and center["roc_auc"] >= OCCLUSION_AUC_WARNING
        and intact["roc_auc"] - center["roc_auc"] <= OCCLUSION_DROP
    ):
        warnings.append(
            f"with the centre of the image masked the model still reaches ROC-AUC "
            f"{center['roc_auc']:.2f} (intact: {intact['roc_auc']:.2f}): it can decide without "
            "the anatomy, so it likely uses a shortcut at the borders (marks, text, collimation)"
        )
    return warnings


def audit_scored(
    bundle: Bundle, table: ImageTable, pixels: np.ndarray, sources: pd.Series | None, seed: int = 0
) -> dict[str, Any]:
    """Both probes on already decoded images; ``sources`` names each image's source (or None)."""
    if sources is None or sources.isna().any():
        source = {
            "auc": None,
            "reason": "no image sources: give a CSV with a 'source' column or several --data",
            "sources": {},
            "class_by_source": [],
        }
        coincide = None
    else:
        sources = sources.astype(str).reset_index(drop=True)
        source = source_probe(bundle, table, pixels, sources, seed)
        coincide = coinciding_sources(table, sources)
    occlusion = occlusion_probe(bundle, table.labels, pixels)
    return {
        "source_probe": source,
        "occlusion": occlusion,
        "warnings": audit_findings(source, occlusion, coincide),
    }


def write_audit(out: Path, audit: dict[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "audit.json", json.dumps(audit, indent=2))
    return out / "audit.json"


def audit_bundle(
    bundle_path: str | Path, data: LabelledData, out: str | Path, seed: int = 0
) -> dict[str, Any]:
    """Run both probes and add them to the report (and model card) in ``out``.

    With one ``data`` path, image sources come from its ``source`` column (a run's
    ``splits.csv`` or ``curation.csv`` has one when the recipe mixed sources); with several,
    each is one source. When ``out`` holds no evaluation yet, one is written first.
    """
    bundle = load_bundle(bundle_path)
    bundle.spec.require_single_label("audit (its source and occlusion probes)")
    scored, facts = score_labelled(bundle_path, bundle, data)
    sources = scored.table.frame["source"] if "source" in scored.table.frame else None
    audit = audit_scored(bundle, scored.table, scored.pixels, sources, seed)
    audit.update(data=data.name, split=data.split, n=len(scored.table))
    audit.update(seen_in_training=facts["seen_in_training"], seen=facts["seen"])
    out = Path(out)
    if not (out / "metrics.json").is_file():
        write_evaluation(out, bundle, scored, facts, seed=seed)
    write_audit(out, audit)
    metrics = json.loads((out / "metrics.json").read_text())
    card = model_card(bundle.spec, metrics, recipe_of(out), audit)
    atomic_write_text(out / "model_card.md", card)
    folder = bundle_folder(bundle_path)
    if folder.resolve().parent == out.resolve():  # auditing a run in its own folder
        write_card(folder, card)
    write_report(out)
    return audit
