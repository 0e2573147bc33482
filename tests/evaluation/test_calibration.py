"""Reliability bins, ECE and temperature scaling on hand-worked and synthetic examples."""

from __future__ import annotations

import numpy as np
import pytest

from medsight.bundle import softmax
from medsight.evaluation.calibration import (
    ECE_BINS,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_bins,
)


def _two_class(p_first: list[float]) -> np.ndarray:
    p = np.array(p_first, dtype=np.float64)
    return np.stack([p, 1 - p], axis=1)


def test_reliability_bins_on_a_hand_worked_example() -> None:
    # top-label confidences 0.9, 0.85 (bin (0.75, 1]) and 0.7, 0.6, 0.55 (bin (0.5, 0.75])
    probs = _two_class([0.9, 0.15, 0.7, 0.4, 0.55])
    y = np.array([0, 0, 0, 1, 1])  # right, wrong, right, right, wrong
    rows = reliability_bins(y, probs, bins=4)
    assert [(r["low"], r["high"], r["count"]) for r in rows] == [(0.5, 0.75, 3), (0.75, 1.0, 2)]
    assert rows[0]["confidence"] == pytest.approx((0.7 + 0.6 + 0.55) / 3)
    assert rows[0]["accuracy"] == pytest.approx(2 / 3)
    assert rows[1]["confidence"] == pytest.approx((0.9 + 0.85) / 2)
    assert rows[1]["accuracy"] == pytest.approx(1 / 2)
    # ECE: the count-weighted gaps of those two bins
    expected = 3 / 5 * abs(2 / 3 - 0.6167) + 2 / 5 * abs(0.5 - 0.875)
    assert expected_calibration_error(y, probs, bins=4) == pytest.approx(expected, abs=1e-4)


def test_empty_bins_are_left_out_and_counts_add_up() -> None:
    rng = np.random.default_rng(1)
    probs = softmax(rng.normal(0, 2, (200, 3)))
    y = rng.integers(0, 3, 200)
    rows = reliability_bins(y, probs)
    assert all(r["count"] > 0 for r in rows)
    assert sum(r["count"] for r in rows) == 200
    lows = [r["low"] for r in rows]
    assert lows == sorted(lows) and len(rows) <= ECE_BINS
    for r in rows:  # every mean confidence lies inside its own (low, high] bin
        assert r["low"] < r["confidence"] <= r["high"] + 1e-7


@pytest.mark.parametrize("k", [2, 3, 4, 5, 8])
def test_a_tie_at_one_over_k_falls_in_the_first_bin(k: int) -> None:
    probs = softmax(np.zeros((1, k)))  # every class 1/k: the lowest possible confidence
    (row,) = reliability_bins(np.array([0]), probs, bins=k)
    assert row["low"] == 0.0 and row["high"] == pytest.approx(1 / k)


@pytest.mark.parametrize(
    ("confidence", "bins", "low"),
    [
        (0.5, 2, 0.0),  # an edge belongs to the bin below it: bins are (low, high]
        (0.75, 4, 0.5),
        (0.7500001, 4, 0.75),
        (1.0, 4, 0.75),  # certainty is in the last bin
        (1.0, ECE_BINS, (ECE_BINS - 1) / ECE_BINS),
    ],
)
def test_bin_edges(confidence: float, bins: int, low: float) -> None:
    (row,) = reliability_bins(np.array([0]), _two_class([confidence]), bins=bins)
    assert row["low"] == pytest.approx(low)


def test_ece_of_a_perfectly_calibrated_set_is_zero() -> None:
    # 10 images at 80 % confidence, 8 right; 10 at 60 %, 6 right
    probs = _two_class([0.8] * 10 + [0.6] * 10)
    y = np.array([0] * 8 + [1] * 2 + [0] * 6 + [1] * 4)
    assert expected_calibration_error(y, probs) == pytest.approx(0.0, abs=1e-9)


def test_ece_of_labels_drawn_from_the_probabilities_is_small() -> None:
    rng = np.random.default_rng(0)
    probs = softmax(rng.normal(0, 2, (20000, 3))).astype(np.float64)
    probs /= probs.sum(1, keepdims=True)
    y = np.array([rng.choice(3, p=row) for row in probs])
    assert expected_calibration_error(y, probs) < 0.02
    # the same confidences, always wrong: the gap is the whole confidence
    wrong = (probs.argmax(1) + 1) % 3
    assert expected_calibration_error(wrong, probs) == pytest.approx(probs.max(1).mean(), 1e-6)


def test_ece_of_no_images_is_zero() -> None:
    assert expected_calibration_error(np.array([], dtype=int), np.zeros((0, 2))) == 0.0


def test_temperature_scaling_recovers_a_known_temperature() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (6000, 3))
    true_t = 2.0
    p = softmax(logits, true_t).astype(float)
    p /= p.sum(1, keepdims=True)
    y = np.array([rng.choice(3, p=row) for row in p])
    fitted = fit_temperature(logits, y)
    assert fitted == pytest.approx(true_t, rel=0.08)
    before = expected_calibration_error(y, softmax(logits))
    after = expected_calibration_error(y, softmax(logits, fitted))
    assert after < before / 2
    assert fit_temperature(logits[:10], np.zeros(10, int)) == 1.0  # one class: nothing to fit


@pytest.mark.parametrize("true_t", [0.5, 3.0])
def test_fitted_temperature_minimises_the_nll(true_t: float) -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 2, (3000, 2))
    p = softmax(logits, true_t).astype(float)
    p /= p.sum(1, keepdims=True)
    y = (rng.random(3000) < p[:, 1]).astype(int)
    fitted = fit_temperature(logits, y)
    assert fitted == pytest.approx(true_t, rel=0.15)
    at_fit = negative_log_likelihood(logits, y, fitted)
    for other in (fitted * 0.8, fitted * 1.25, 1.0):
        assert at_fit <= negative_log_likelihood(logits, y, other) + 1e-9


@pytest.mark.parametrize(
    ("logits", "y"),
    [
        (np.zeros((0, 3)), np.array([], dtype=int)),  # no images
        (np.array([[2.0, -1.0], [0.5, 0.1], [3.0, 0.0]]), np.array([0, 0, 0])),  # one class
        (np.array([[2.0, -1.0, 0.0]]), [2]),  # one image
    ],
)
def test_nothing_to_fit_gives_one(logits: np.ndarray, y) -> None:
    assert fit_temperature(logits, y) == 1.0


def test_fitted_temperature_stays_within_its_bounds() -> None:
    # perfectly separated labels: the NLL keeps falling as T shrinks, down to the bound 0.05
    logits = np.array([[1.0, -1.0], [-1.0, 1.0]] * 10)
    y = np.array([0, 1] * 10)
    assert 0.05 <= fit_temperature(logits, y) < 0.06
    # labels the logits get exactly backwards: T grows to the bound 20
    assert 19.0 < fit_temperature(logits, 1 - y) <= 20.0


@pytest.mark.parametrize(
    ("logits", "y", "temperature", "expected"),
    [
        ([[0.0, 0.0]], [0], 1.0, np.log(2)),
        ([[0.0, 0.0, 0.0]], [2], 5.0, np.log(3)),  # a tie stays a tie at any T
        ([[2.0, 0.0]], [0], 1.0, np.log(1 + np.exp(-2.0))),
        ([[2.0, 0.0]], [0], 2.0, np.log(1 + np.exp(-1.0))),  # logits halved
        ([[2.0, 0.0], [2.0, 0.0]], [0, 1], 1.0, (np.log1p(np.exp(-2)) + np.log1p(np.exp(2))) / 2),
    ],
)
def test_negative_log_likelihood_by_hand(logits, y, temperature, expected) -> None:
    assert negative_log_likelihood(np.array(logits), np.array(y), temperature) == pytest.approx(
        expected
    )
