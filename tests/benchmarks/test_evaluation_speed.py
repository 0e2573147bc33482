"""The evaluation benchmark's comparison of checkouts catches a figure that changed."""

from __future__ import annotations

import math

from benchmarks.evaluation_speed import largest_difference


def _found(value: float | None) -> dict:
    return {"case": {"seconds": 1.0, "figures": {"roc_auc": {"value": 0.9, "ci_low": value}}}}


def test_the_largest_gap_between_checkouts_is_reported() -> None:
    assert largest_difference(_found(0.8), _found(0.8)) == 0.0
    assert math.isclose(largest_difference(_found(0.8), _found(0.75)), 0.05)


def test_a_figure_defined_on_one_checkout_only_is_an_infinite_gap() -> None:
    assert largest_difference(_found(0.8), _found(None)) == math.inf
    assert largest_difference(_found(None), _found(None)) == 0.0
