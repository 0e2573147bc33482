"""Multi-label figures: missing labels masked, per-label temperatures and thresholds, averages,
patient-level intervals and the per-label table."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from sklearn import metrics as skm

from medsight.errors import DataError
from medsight.evaluation.multilabel import (
    AVERAGES,
    LABEL_FIGURES,
    PER_LABEL_HEADER,
    label_temperatures,
    label_thresholds,
    multilabel_metrics,
    per_label_rows,
)
from medsight.evaluation.thresholds import choose_threshold

LABELS = ["Atelectasis", "Effusion", "Nodule"]


def _data(n: int = 300, seed: int = 0, missing: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Targets with a share of NaN (not recorded) and probabilities that carry some signal."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, len(LABELS)))
    targets = (rng.random(z.shape) < 1 / (1 + np.exp(-z))).astype(float)
    targets[rng.random(z.shape) < missing] = np.nan
    return targets, 1 / (1 + np.exp(-z))


def _metrics(targets: np.ndarray, probs: np.ndarray, **kwargs) -> dict:
    thresholds = kwargs.pop("thresholds", [0.5] * targets.shape[1])
    names = kwargs.pop("labels", LABELS[: targets.shape[1]])
    return multilabel_metrics(targets, probs, thresholds, names, resamples=50, **kwargs)


def test_missing_labels_are_left_out_of_every_figure() -> None:
    targets, probs = _data()
    found = _metrics(targets, probs)
    # whatever the model says about an image whose label is missing changes nothing
    scrambled = np.where(np.isnan(targets), np.random.default_rng(1).random(probs.shape), probs)
    assert _metrics(targets, scrambled) == found
    for j, name in enumerate(LABELS):
        seen = ~np.isnan(targets[:, j])
        y, p = targets[seen, j], probs[seen, j]
        row = found["per_label"][name]
        assert (row["n"], row["positives"], row["negatives"]) == (
            seen.sum(),
            y.sum(),
            (y == 0).sum(),
        )
        assert row["roc_auc"]["value"] == pytest.approx(skm.roc_auc_score(y, p))
        assert row["pr_auc"]["value"] == pytest.approx(skm.average_precision_score(y, p))
        assert row["f1"]["value"] == pytest.approx(skm.f1_score(y, p >= 0.5))
        assert row["sensitivity"]["value"] == pytest.approx(skm.recall_score(y, p >= 0.5))
        assert row["brier"]["value"] == pytest.approx(skm.brier_score_loss(y, p))
    # counting a missing label as absent would have scored the model against a reading nobody made
    as_absent = _metrics(np.nan_to_num(targets), probs)
    assert as_absent["per_label"]["Effusion"]["roc_auc"]["value"] != pytest.approx(
        found["per_label"]["Effusion"]["roc_auc"]["value"]
    )


def test_a_perfect_ranking_has_auc_one_with_its_interval() -> None:
    targets, _ = _data(missing=0.1)
    probs = np.where(np.isnan(targets), 0.5, np.nan_to_num(targets) * 0.8 + 0.1)
    found = _metrics(targets, probs)
    for name in LABELS:
        assert found["per_label"][name]["roc_auc"] == {"value": 1.0, "ci_low": 1.0, "ci_high": 1.0}
        assert found["per_label"][name]["sensitivity"]["value"] == 1.0
    assert found["micro_roc_auc"] == found["macro_roc_auc"] == 1.0
    assert found["label_accuracy"] == 1.0
    assert found["notes"] == []


def test_macro_averages_the_labels_and_micro_pools_the_entries() -> None:
    targets, probs = _data(seed=3)
    found = _metrics(targets, probs, thresholds=[0.3, 0.5, 0.7])
    rows = found["per_label"]
    for key in ("roc_auc", "pr_auc", "sensitivity", "specificity", "f1"):
        expected = np.mean([rows[name][key]["value"] for name in LABELS])
        assert found[f"macro_{key}"] == pytest.approx(expected)
        assert found["figures"][f"macro_{key}"]["value"] == found[f"macro_{key}"]
    seen = ~np.isnan(targets)
    y, p = targets[seen], probs[seen]
    said = (probs >= [0.3, 0.5, 0.7])[seen]
    assert found["micro_roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert found["micro_pr_auc"] == pytest.approx(skm.average_precision_score(y, p))
    assert found["micro_f1"] == pytest.approx(skm.f1_score(y, said))
    assert found["label_accuracy"] == pytest.approx((said == y).mean())
    assert found["micro_roc_auc"] != pytest.approx(found["macro_roc_auc"])
    assert all(found["figures"][key]["ci_low"] <= found[key] for key in AVERAGES)


def test_a_label_without_positives_is_undefined_and_says_so() -> None:
    targets, probs = _data(seed=4)
    targets[:, 2] = np.where(np.isnan(targets[:, 2]), np.nan, 0.0)
    found = _metrics(targets, probs, thresholds=[0.5, 0.5, 1.01])  # Nodule: nothing said
    nodule = found["per_label"]["Nodule"]
    for key in ("roc_auc", "pr_auc", "sensitivity", "ppv", "f1"):
        assert nodule[key] == {"value": None, "ci_low": None, "ci_high": None}
    assert nodule["specificity"]["value"] == 1.0
    assert any(
        n.startswith("Nodule: roc_auc, pr_auc, sensitivity undefined") for n in found["notes"]
    )
    assert any(n.startswith("Nodule: ppv, f1 undefined: nothing predicted") for n in found["notes"])
    assert not any(n.startswith(("Atelectasis", "Effusion")) for n in found["notes"])
    rows = found["per_label"]
    assert found["macro_roc_auc"] == pytest.approx(
        np.mean([rows[n]["roc_auc"]["value"] for n in ("Atelectasis", "Effusion")])
    )


def test_a_label_never_recorded_and_no_images_are_said_not_crashed() -> None:
    targets, probs = _data(n=40)
    targets[:, 1] = np.nan
    found = _metrics(targets, probs)
    assert found["per_label"]["Effusion"]["n"] == 0
    assert found["per_label"]["Effusion"]["ece"] is None
    assert "Effusion: no image has this label, so every figure of it is undefined" in found["notes"]
    empty = _metrics(np.empty((0, 3)), np.empty((0, 3)))
    assert empty["n"] == 0 and empty["macro_roc_auc"] is None
    assert "macro_roc_auc undefined: no label defines it" in empty["notes"]
    json.dumps(empty, allow_nan=False)


def test_the_whole_answer_is_json_without_nan() -> None:
    targets, probs = _data()
    found = _metrics(targets, probs, groups=[f"p{i // 4}" for i in range(len(targets))])
    assert set(found) == {
        "task",
        "n",
        "labels",
        "per_label",
        *AVERAGES,
        "label_accuracy",
        "figures",
        "bootstrap",
        "notes",
    }
    assert found["task"] == "multilabel" and found["labels"] == LABELS
    assert set(found["per_label"]["Nodule"]) == {
        "n",
        "positives",
        "negatives",
        "threshold",
        *LABEL_FIGURES,
        "ece",
    }
    assert set(found["figures"]) == {*AVERAGES, "label_accuracy"}
    assert found["bootstrap"]["unit"] == "patient" and found["bootstrap"]["resamples"] == 50
    assert json.loads(json.dumps(found, allow_nan=False)) == found


def test_patients_not_images_are_resampled() -> None:
    """Ten near-identical X-rays of each patient: resampling images pretends there are ten
    times as many independent cases, and gives intervals that are too narrow."""
    rng = np.random.default_rng(5)
    truth = rng.integers(0, 2, (40, 2)).astype(float)
    score = np.clip(truth * 0.3 + rng.random((40, 2)) * 0.7, 0, 1)
    targets, probs = np.repeat(truth, 10, axis=0), np.repeat(score, 10, axis=0)
    probs = probs + rng.normal(0, 1e-3, probs.shape)
    groups = np.repeat([f"patient-{i}" for i in range(40)], 10)
    kwargs = {"thresholds": [0.5, 0.5], "labels": LABELS[:2]}
    by_patient = _metrics(targets, probs, groups=groups, **kwargs)
    by_image = _metrics(targets, probs, **kwargs)
    assert (by_patient["bootstrap"]["unit"], by_image["bootstrap"]["unit"]) == ("patient", "image")
    assert by_patient["bootstrap"]["groups"] == 40
    for key in ("macro_roc_auc", "micro_f1"):
        width = {
            unit: m["figures"][key]["ci_high"] - m["figures"][key]["ci_low"]
            for unit, m in (("patient", by_patient), ("image", by_image))
        }
        assert width["patient"] > 2 * width["image"]


def test_temperatures_recover_a_known_scale_per_label() -> None:
    rng = np.random.default_rng(6)
    z = rng.normal(0, 2, (4000, 3))
    targets = (rng.random(z.shape) < 1 / (1 + np.exp(-z))).astype(float)
    logits = z * np.array([3.0, 0.5, 1.0])  # over-, under- and well-confident labels
    targets[::3, 0] = np.nan
    targets[:, 2] = 0.0  # no positive: nothing to fit
    found = label_temperatures(logits, targets)
    assert found[0] == pytest.approx(3.0, rel=0.1)
    assert found[1] == pytest.approx(0.5, rel=0.1)
    assert found[2] == 1.0
    # a missing label's logit does not move its label's temperature
    noisy = np.where(np.isnan(targets), rng.normal(0, 50, z.shape), logits)
    assert label_temperatures(noisy, targets) == found


@pytest.mark.parametrize("rule", ["youden", "sensitivity>=0.9", "0.3"])
def test_thresholds_are_chosen_on_each_labels_recorded_rows(rule: str) -> None:
    targets, probs = _data(seed=7)
    thresholds, hows = label_thresholds(targets, probs, rule)
    for j in range(len(LABELS)):
        seen = ~np.isnan(targets[:, j])
        assert (thresholds[j], hows[j]) == choose_threshold(
            targets[seen, j] == 1, probs[seen, j], rule
        )
    # a label recorded on no image keeps 0.5 and says why
    targets[:, 1] = np.nan
    assert label_thresholds(targets, probs, "youden")[1][1].startswith("fixed 0.5")


def test_the_per_label_table_names_each_figure_with_its_interval() -> None:
    targets, probs = _data()
    found = _metrics(targets, probs, thresholds=[0.25, 0.5, 0.75])
    rows = per_label_rows(found)
    assert [row[0] for row in rows] == LABELS
    assert all(len(row) == len(PER_LABEL_HEADER) for row in rows)
    effusion = found["per_label"]["Effusion"]
    roc = effusion["roc_auc"]
    assert rows[1][:4] == ["Effusion", str(effusion["n"]), str(effusion["positives"]), "0.5000"]
    assert rows[1][4] == (
        f"{roc['value']:.3f} (95 % CI {roc['ci_low']:.3f} to {roc['ci_high']:.3f})"
    )


@pytest.mark.parametrize(
    ("targets", "names", "thresholds", "message"),
    [
        (np.zeros((4, 2)), ["a"], [0.5], "must both be (images, labels)"),
        (np.full((4, 3), 2.0), ["a", "b", "c"], [0.5] * 3, "1 (present), 0 (absent) or NaN"),
        (np.zeros((4, 3)), ["a", "a", "c"], [0.5] * 3, "distinct names"),
        (np.zeros((4, 3)), ["a", "b"], [0.5] * 3, "distinct names"),
        (np.zeros((4, 3)), ["a", "macro", "c"], [0.5] * 3, "name the averages"),
        (np.zeros((4, 3)), ["a", "b", "c"], [0.5], "3 labels need 3 thresholds"),
    ],
)
def test_bad_input_is_one_clear_error(
    targets: np.ndarray, names: list[str], thresholds: list[float], message: str
) -> None:
    with pytest.raises(DataError, match=re.escape(message)):
        multilabel_metrics(targets, np.full((4, 3), 0.5), thresholds, names, resamples=0)
