"""The numpy figures the bootstrap recomputes give scikit-learn's values: ties, float32 scores,
one image, degenerate decisions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from medsight.evaluation.ranking import average_precision, class_rates, confusion, mcc, roc_auc

RNG = np.random.default_rng(11)
BINARY_CASES = {
    "distinct scores": (RNG.integers(0, 2, 200), RNG.random(200)),
    "many ties": (RNG.integers(0, 2, 300), RNG.integers(0, 5, 300) / 4),
    "all scores tied": (np.array([0, 1, 1, 0, 1]), np.full(5, 0.5)),
    "float32 scores": (RNG.integers(0, 2, 150), RNG.random(150).astype(np.float32)),
    "one positive": (np.array([0, 0, 1, 0]), np.array([0.1, 0.9, 0.4, 0.4])),
    "perfectly separated": (np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])),
    "perfectly reversed": (np.array([1, 1, 0, 0]), np.array([0.1, 0.2, 0.8, 0.9])),
}


@pytest.mark.parametrize("y, score", BINARY_CASES.values(), ids=BINARY_CASES.keys())
def test_ranking_figures_equal_sklearn(y: np.ndarray, score: np.ndarray) -> None:
    assert roc_auc(y == 1, score) == pytest.approx(skm.roc_auc_score(y, score), abs=1e-12)
    ap = skm.average_precision_score(y, score)
    assert average_precision(y == 1, score) == pytest.approx(ap, abs=1e-12)


def test_without_both_classes_the_ranking_figures_are_undefined() -> None:
    assert roc_auc(np.array([True, True]), np.array([0.2, 0.4])) is None
    assert roc_auc(np.array([False, False]), np.array([0.2, 0.4])) is None
    assert average_precision(np.array([False, False]), np.array([0.2, 0.4])) is None
    # all positive: every precision is 1, as scikit-learn says
    assert average_precision(np.array([True, True]), np.array([0.2, 0.4])) == 1.0


DECISION_CASES = {
    "binary": (RNG.integers(0, 2, 100), RNG.integers(0, 2, 100), 2),
    "three classes": (RNG.integers(0, 3, 120), RNG.integers(0, 3, 120), 3),
    "a class never predicted": (RNG.integers(0, 3, 60), RNG.integers(0, 2, 60), 3),
    "a class absent from truth and decisions": (RNG.integers(0, 2, 60), RNG.integers(0, 2, 60), 4),
    "everything said to be one class": (RNG.integers(0, 3, 50), np.zeros(50, dtype=int), 3),
    "truth of one class": (np.ones(30, dtype=int), RNG.integers(0, 2, 30), 2),
}


@pytest.mark.parametrize("y, said, k", DECISION_CASES.values(), ids=DECISION_CASES.keys())
def test_counting_figures_equal_sklearn(y: np.ndarray, said: np.ndarray, k: int) -> None:
    labels = list(range(k))
    matrix = confusion(y, said, k)
    np.testing.assert_array_equal(matrix, skm.confusion_matrix(y, said, labels=labels))
    assert mcc(matrix) == pytest.approx(skm.matthews_corrcoef(y, said), abs=1e-12)
    precision, recall, f1, _ = skm.precision_recall_fscore_support(
        y, said, labels=labels, zero_division=0
    )
    rates = class_rates(matrix)
    np.testing.assert_allclose(rates["precision"], precision, atol=1e-12)
    np.testing.assert_allclose(rates["recall"], recall, atol=1e-12)
    np.testing.assert_allclose(rates["f1"], f1, atol=1e-12)
