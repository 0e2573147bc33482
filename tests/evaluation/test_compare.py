"""DeLong's test against a hand-worked example, and against the bootstrap on larger data."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medsight.evaluation.bootstrap import bootstrap
from medsight.evaluation.compare import delong_test


def test_delong_on_a_hand_worked_example() -> None:
    # 3 positives, 2 negatives. Model A ranks perfectly: AUC 1. Model B: positives 0.2, 0.7,
    # 0.9 vs negatives 0.3, 0.6 -> 4 of 6 pairs right, AUC 2/3. DeLong (1988) structural
    # components: V10_A = (1, 1, 1), V10_B = (0, 1, 1); V01_A = (1, 1), V01_B = (2/3, 2/3).
    # S10 = var(V10_B) = 1/3 (others 0), S01 = 0, so var(AUC_B - AUC_A) = (1/3) / 3 = 1/9,
    # z = (2/3 - 1) / (1/3) = -1, p = 2 * (1 - Phi(1)) = 0.3173.
    y = np.array([0, 0, 1, 1, 1], dtype=bool)
    result = delong_test(y, [0.1, 0.2, 0.6, 0.7, 0.8], [0.3, 0.6, 0.2, 0.7, 0.9])
    assert result["auc_a"] == pytest.approx(1.0) and result["auc_b"] == pytest.approx(2 / 3)
    assert result["se"] == pytest.approx(1 / 3)
    assert result["z"] == pytest.approx(-1.0)
    assert result["p_value"] == pytest.approx(0.3173, abs=1e-4)


def test_delong_standard_error_agrees_with_the_paired_bootstrap() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 400).astype(bool)
    a = rng.normal(1.0 * y, 1.0)
    b = a + rng.normal(0.3 * y, 0.8)  # correlated with a, a little better
    result = delong_test(y, a, b)
    assert result["auc_a"] == pytest.approx(roc_auc_score(y, a))
    assert result["auc_b"] == pytest.approx(roc_auc_score(y, b))
    diff = lambda r: {"d": roc_auc_score(y[r], b[r]) - roc_auc_score(y[r], a[r])}  # noqa: E731
    ci, _ = bootstrap(diff, 400, resamples=400, seed=1)
    boot_se = (ci["d"]["ci_high"] - ci["d"]["ci_low"]) / (2 * 1.96)
    assert result["se"] == pytest.approx(boot_se, rel=0.25)


def test_identical_models_are_not_different() -> None:
    y = np.array([0, 1, 0, 1, 1, 0], dtype=bool)
    s = np.array([0.1, 0.8, 0.4, 0.6, 0.3, 0.2])
    result = delong_test(y, s, s)
    assert result["difference"] == 0 and result["p_value"] == 1.0


def test_paired_bootstrap_p_values_are_never_zero() -> None:
    rng = np.random.default_rng(6)
    d = rng.normal(1.0, 0.1, 50)  # a difference far from zero
    ci, _ = bootstrap(lambda r: {"d": float(d[r].mean())}, 50, resamples=199, p_values=True)
    assert ci["d"]["p_value"] == pytest.approx(2 / 200)
    same = np.zeros(50)
    ci, _ = bootstrap(lambda r: {"d": float(same[r].mean())}, 50, resamples=199, p_values=True)
    assert ci["d"]["p_value"] == 1.0
