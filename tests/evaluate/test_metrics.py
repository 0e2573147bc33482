"""Metrics against scikit-learn on fixed vectors, including degenerate cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from medsight.evaluate.metrics import classification_metrics, decide

NAMES = ["Parasitized", "Uninfected"]  # the positive (disease) class is index 0 here


def _probs(p_pos: list[float]) -> np.ndarray:
    p = np.array(p_pos)
    return np.stack([p, 1 - p], axis=1)


def test_binary_metrics_match_sklearn_with_positive_class_first() -> None:
    y = np.array([0, 0, 0, 1, 1, 1, 1, 0, 1, 0])
    p_pos = [0.9, 0.8, 0.3, 0.2, 0.6, 0.1, 0.4, 0.7, 0.05, 0.55]
    m = classification_metrics(y, _probs(p_pos), NAMES, positive_index=0, threshold=0.5)
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


def test_threshold_moves_the_decision() -> None:
    probs = _probs([0.3, 0.6])
    assert list(decide(probs, 0, 0.5)) == [1, 0]
    assert list(decide(probs, 0, 0.25)) == [0, 0]
    assert list(decide(probs, 0, 0.7)) == [1, 1]


def test_one_class_only_gives_none_with_a_reason() -> None:
    m = classification_metrics(np.array([0, 0, 0]), _probs([0.9, 0.2, 0.7]), NAMES, 0)
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["roc_auc"] is None and m["specificity"] is None
    assert any("only one class" in n for n in m["notes"])
    assert any("specificity undefined" in n for n in m["notes"])


def test_all_predictions_equal_is_not_a_crash() -> None:
    m = classification_metrics(np.array([0, 1, 0, 1]), _probs([0.5] * 4), NAMES, 0, 0.9)
    assert m["sensitivity"] == 0.0 and m["specificity"] == 1.0
    assert m["ppv"] is None and m["roc_auc"] == pytest.approx(0.5)


def test_no_images() -> None:
    m = classification_metrics(np.array([], dtype=int), np.zeros((0, 2)), NAMES, 0)
    assert m["n"] == 0 and "no images" in m["notes"][0]


def test_multiclass_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 60)
    probs = rng.dirichlet([1, 1, 1], 60)
    probs[np.arange(60), y] += 0.5
    probs /= probs.sum(1, keepdims=True)
    m = classification_metrics(y, probs, ["a", "b", "c"], positive_index=None)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, probs.argmax(1)))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, probs.argmax(1)))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr"))
    assert "sensitivity" not in m
