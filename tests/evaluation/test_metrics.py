"""Metrics against scikit-learn on fixed vectors, including degenerate cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from medsight.bundle import decide
from medsight.errors import DataError
from medsight.evaluation.metrics import classification_metrics

NAMES = ["Parasitized", "Uninfected"]  # the positive (disease) class is index 0 here


def _probs(p_pos: list[float]) -> np.ndarray:
    p = np.array(p_pos)
    return np.stack([p, 1 - p], axis=1)


def _metrics(y, probs, names, positive_index, threshold=0.5) -> dict:
    """The figures of the decisions a bundle with this threshold makes."""
    predicted = decide(probs, positive_index, threshold)
    return classification_metrics(y, probs, predicted, names, positive_index)


def test_binary_metrics_match_sklearn_with_positive_class_first() -> None:
    y = np.array([0, 0, 0, 1, 1, 1, 1, 0, 1, 0])
    p_pos = [0.9, 0.8, 0.3, 0.2, 0.6, 0.1, 0.4, 0.7, 0.05, 0.55]
    m = _metrics(y, _probs(p_pos), NAMES, positive_index=0, threshold=0.5)
    is_pos = y == 0
    said_pos = np.array(p_pos) >= 0.5
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(is_pos, said_pos))
    assert m["sensitivity"] == pytest.approx(skm.recall_score(is_pos, said_pos))
    assert m["specificity"] == pytest.approx(skm.recall_score(~is_pos, ~said_pos))
    assert m["ppv"] == pytest.approx(skm.precision_score(is_pos, said_pos))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(is_pos, p_pos))
    assert m["f1"] == pytest.approx(skm.f1_score(is_pos, said_pos))
    assert m["n"] == 10 and m["positive_class"] == "Parasitized"
    assert np.array(m["confusion_matrix"]).sum() == 10


def test_one_class_only_gives_none_with_a_reason() -> None:
    m = _metrics(np.array([0, 0, 0]), _probs([0.9, 0.2, 0.7]), NAMES, 0)
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["roc_auc"] is None and m["specificity"] is None
    assert any("only one class" in n for n in m["notes"])
    assert any("specificity undefined" in n for n in m["notes"])


def test_all_predictions_equal_is_not_a_crash() -> None:
    m = _metrics(np.array([0, 1, 0, 1]), _probs([0.5] * 4), NAMES, 0, 0.9)
    assert m["sensitivity"] == 0.0 and m["specificity"] == 1.0
    assert m["ppv"] is None and m["roc_auc"] == pytest.approx(0.5)


def test_no_images() -> None:
    m = _metrics(np.array([], dtype=int), np.zeros((0, 2)), NAMES, 0)
    assert m["n"] == 0 and "no images" in m["notes"][0]


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["NaN", "infinity"])
@pytest.mark.parametrize("positive_index", [1, None], ids=["binary", "multi-class"])
def test_scores_that_are_not_numbers_are_refused_not_ranked(
    bad: float, positive_index: int | None
) -> None:
    probs = _probs([0.9, 0.2, 0.7, 0.4])
    probs[2] = bad
    with pytest.raises(DataError, match="1 of 4 images .* not a number"):
        _metrics(np.array([1, 0, 1, 0]), probs, NAMES, positive_index)


def test_multiclass_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 60)
    probs = rng.dirichlet([1, 1, 1], 60)
    probs[np.arange(60), y] += 0.5
    probs /= probs.sum(1, keepdims=True)
    m = _metrics(y, probs, ["a", "b", "c"], positive_index=None)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, probs.argmax(1)))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, probs.argmax(1)))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr"))
    assert "sensitivity" not in m


def test_every_binary_figure_matches_sklearn_with_positive_class_second() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    p_pos = np.clip(0.35 * y + rng.uniform(0, 0.65, 200), 0, 1)
    probs = np.stack([1 - p_pos, p_pos], axis=1)
    m = _metrics(y, probs, ["NORMAL", "PNEUMONIA"], positive_index=1, threshold=0.4)
    said = p_pos >= 0.4
    assert m["npv"] == pytest.approx(skm.precision_score(y == 0, ~said))
    assert m["mcc"] == pytest.approx(skm.matthews_corrcoef(y, said))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, said))
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(y, p_pos))
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y, p_pos))
    assert m["positive_class"] == "PNEUMONIA"
    assert 0 <= m["ece"] <= 1


def test_ece_on_a_hand_worked_example() -> None:
    # two bins used: confidence 0.9 (4 images, 3 right) and 0.6 (2 images, 2 right)
    p = np.array([0.9, 0.9, 0.9, 0.9, 0.6, 0.6])
    probs = np.stack([p, 1 - p], axis=1)
    y = np.array([0, 0, 0, 1, 0, 0])
    expected = 4 / 6 * abs(0.75 - 0.9) + 2 / 6 * abs(1.0 - 0.6)
    m = _metrics(y, probs, NAMES, positive_index=0)
    assert m["ece"] == pytest.approx(expected)


def test_multiclass_per_class_macro_and_micro_match_sklearn() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 90)
    probs = rng.dirichlet([1, 1, 1], 90)
    probs[np.arange(90), y] += 0.4
    probs /= probs.sum(1, keepdims=True)
    pred = probs.argmax(1)
    m = _metrics(y, probs, ["a", "b", "c"], positive_index=None)
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["micro_f1"] == pytest.approx(skm.f1_score(y, pred, average="micro"))
    assert m["macro_ppv"] == pytest.approx(skm.precision_score(y, pred, average="macro"))
    assert m["mcc"] == pytest.approx(skm.matthews_corrcoef(y, pred))
    onehot = np.eye(3)[y]
    assert m["micro_roc_auc"] == pytest.approx(skm.roc_auc_score(onehot, probs, average="micro"))
    for i, name in enumerate("abc"):
        row = m["per_class"][name]
        assert row["sensitivity"] == pytest.approx(skm.recall_score(y == i, pred == i))
        assert row["specificity"] == pytest.approx(skm.recall_score(y != i, pred != i))
        assert row["roc_auc"] == pytest.approx(skm.roc_auc_score(y == i, probs[:, i]))


def test_baselines_make_kermany_625_percent_visible() -> None:
    y = np.array([0] * 234 + [1] * 390)  # Kermany's test split: 234 NORMAL, 390 PNEUMONIA
    probs = np.tile([0.0, 1.0], (624, 1))  # 'pneumonia' for everyone
    m = _metrics(y, probs, ["NORMAL", "PNEUMONIA"], positive_index=1)
    assert m["accuracy"] == pytest.approx(0.625)
    assert m["baselines"]["majority_class"] == "PNEUMONIA"
    assert m["baselines"]["majority_accuracy"] == pytest.approx(0.625)
    assert m["baselines"]["positive_prevalence"] == pytest.approx(390 / 624)
    assert m["specificity"] == 0.0 and m["roc_auc"] == pytest.approx(0.5)


def test_one_class_only_leaves_ranking_figures_undefined_with_a_reason() -> None:
    m = _metrics(np.array([1, 1]), _probs([0.2, 0.9]), NAMES, 0)
    assert m["pr_auc"] is None and m["roc_auc"] is None and m["sensitivity"] is None
    assert m["mcc"] == 0.0 and np.isfinite(m["brier"])
    assert any("only one class" in n for n in m["notes"])


def test_three_classes_get_per_class_and_pairwise_figures_with_cis() -> None:
    from sklearn.metrics import roc_auc_score

    from medsight.bundle import BundleSpec
    from medsight.evaluation.metrics import class_figures
    from medsight.evaluation.summary import evaluate_predictions

    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    logits = np.eye(3)[y] * 1.5 + rng.normal(0, 1, (300, 3))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    names = ["NORMAL", "BACTERIAL", "VIRAL"]
    found = class_figures(y, probs, probs.argmax(axis=1), names)
    rows = y > 0  # the bacterial-vs-viral question: pneumonia images only, BACTERIAL positive
    score = probs[rows, 1] / (probs[rows, 1] + probs[rows, 2])
    assert found["BACTERIAL_vs_VIRAL_roc_auc"] == pytest.approx(roc_auc_score(y[rows] == 1, score))
    said = score >= 0.5
    assert found["BACTERIAL_vs_VIRAL_accuracy"] == pytest.approx(np.mean(said == (y[rows] == 1)))
    assert found["BACTERIAL_vs_VIRAL_sensitivity"] == pytest.approx(said[y[rows] == 1].mean())
    assert found["VIRAL_roc_auc"] == pytest.approx(roc_auc_score(y == 2, probs[:, 2]))
    assert found["NORMAL_sensitivity"] == pytest.approx((probs.argmax(axis=1)[y == 0] == 0).mean())
    spec = BundleSpec(
        model_name="m", class_names=names, image_size=(8, 8), channels=1, mean=(0,), std=(1,)
    )
    metrics = evaluate_predictions(y, logits, spec, list(range(300)), resamples=100)
    pair = metrics["figures"]["BACTERIAL_vs_VIRAL_roc_auc"]
    assert pair["ci_low"] < pair["value"] < pair["ci_high"]
    assert metrics["BACTERIAL_vs_VIRAL_roc_auc"] == pytest.approx(pair["value"])
    assert "VIRAL_sensitivity" in metrics["figures"] and "NORMAL_vs_VIRAL_roc_auc" in metrics
