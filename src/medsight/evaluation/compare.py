"""Paired comparison of two bundles on the same images: DeLong's test for ROC-AUC and a paired
(patient) bootstrap for every other figure.

DeLong et al. (1988) estimate the covariance of two correlated AUCs from their structural
components; this is the fast form of Sun & Xu (2014), with midranks for ties.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import norm, rankdata

from medsight.bundle import load_bundle
from medsight.errors import DataError
from medsight.evaluation.bootstrap import bootstrap
from medsight.evaluation.labelled import LabelledData
from medsight.evaluation.metrics import figures
from medsight.evaluation.scoring import score_table
from medsight.evaluation.seen import check_seen, seen_count
from medsight.fsutil import atomic_write_text


def delong_test(is_positive: np.ndarray, score_a: np.ndarray, score_b: np.ndarray) -> dict:
    """Two-sided DeLong test of AUC(a) = AUC(b) for two scores of the same images."""
    is_positive = np.asarray(is_positive, dtype=bool)
    m, n = int(is_positive.sum()), int((~is_positive).sum())
    if m < 2 or n < 2:
        raise DataError("DeLong's test needs at least two images of each class")
    scores = np.stack([np.asarray(score_a, float), np.asarray(score_b, float)])
    pos, neg = scores[:, is_positive], scores[:, ~is_positive]
    v10, v01, aucs = [], [], []
    for k in range(2):
        rank_all = rankdata(np.concatenate([pos[k], neg[k]]))
        rank_pos, rank_neg = rankdata(pos[k]), rankdata(neg[k])
        # placement values: the share of negatives below each positive (ties count half) ...
        v10.append((rank_all[:m] - rank_pos) / n)
        # ... and the share of positives above each negative
        v01.append(1.0 - (rank_all[m:] - rank_neg) / m)
        aucs.append(float(v10[-1].mean()))
    covariance = np.cov(np.array(v10)) / m + np.cov(np.array(v01)) / n
    variance = covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]
    difference = aucs[1] - aucs[0]
    if variance <= 0:
        z, p = (0.0, 1.0) if difference == 0 else (float("inf") * np.sign(difference), 0.0)
    else:
        z = difference / np.sqrt(variance)
        p = float(2 * norm.sf(abs(z)))
    return {
        "auc_a": aucs[0],
        "auc_b": aucs[1],
        "difference": difference,
        "se": float(np.sqrt(max(variance, 0.0))),
        "z": float(z),
        "p_value": p,
    }


def compare_bundles(
    bundle_a: str | Path,
    bundle_b: str | Path,
    data: LabelledData,
    resamples: int | None = None,
    seed: int = 0,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Both bundles on the same images (each with its own preprocessing, threshold and
    calibration); differences are B - A. ``seen_in_training`` counts, per bundle, the images it
    had seen (``data.exclude_seen`` leaves out those either saw). Writes ``comparison.json``
    into ``out`` if given."""
    a, b = load_bundle(bundle_a), load_bundle(bundle_b)
    a.spec.require_single_label("compare")
    if a.spec.class_names != b.spec.class_names or a.spec.positive_class != b.spec.positive_class:
        raise DataError(
            f"the bundles predict different classes ({a.spec.class_names}, positive "
            f"{a.spec.positive_class} vs {b.spec.class_names}, positive {b.spec.positive_class}); "
            "only models of the same task can be compared"
        )
    table = data.load(a.spec.class_names)
    seen_columns = {"seen_a": bundle_a, "seen_b": bundle_b}
    table, excluded = check_seen(table, seen_columns, data.exclude_seen)
    scored_a, scored_b = score_table(a, table), score_table(b, table)
    both = sorted(set(scored_a.table.frame["path"]) & set(scored_b.table.frame["path"]))
    rows_a = scored_a.table.frame.reset_index(drop=True).reset_index().set_index("path")
    rows_b = scored_b.table.frame.reset_index(drop=True).reset_index().set_index("path")
    ia, ib = rows_a.loc[both, "index"].to_numpy(), rows_b.loc[both, "index"].to_numpy()
    y = scored_a.labels[ia]
    pa = a.spec.probabilities(scored_a.logits[ia])
    pb = b.spec.probabilities(scored_b.logits[ib])
    da, db = a.spec.decide(pa), b.spec.decide(pb)
    pos = a.spec.positive_index
    patients = list(rows_a.loc[both, "patient"])

    def difference(rows: np.ndarray) -> dict[str, float | None]:
        fa = figures(y[rows], pa[rows], da[rows], pos)
        fb = figures(y[rows], pb[rows], db[rows], pos)
        return {k: None if fa[k] is None or fb[k] is None else fb[k] - fa[k] for k in fa}

    diffs, record = bootstrap(difference, len(y), patients, resamples, seed, p_values=True)
    result: dict[str, Any] = {
        "bundle_a": str(bundle_a),
        "bundle_b": str(bundle_b),
        "data": data.name,
        "n": len(y),
        "seen_in_training": {
            name: seen_count(rows_a.loc[both], f"seen_{name}") for name in ("a", "b")
        },
        "seen_excluded": excluded,
        "a": figures(y, pa, da, pos),
        "b": figures(y, pb, db, pos),
        "difference_b_minus_a": diffs,
        "bootstrap": record,
    }
    if pos is not None:
        result["delong"] = delong_test(y == pos, pa[:, pos], pb[:, pos])
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(out) / "comparison.json", json.dumps(result, indent=2))
    return result
