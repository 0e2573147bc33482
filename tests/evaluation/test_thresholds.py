"""Threshold rules on synthetic scores with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from medsight.errors import ConfigError
from medsight.evaluation.thresholds import check_rule, choose_threshold, operating_points

# negatives at 0.1..0.4, positives at 0.3..0.9: Youden's J is best at 0.5 (sens 5/6, spec 1)
NEG = [0.1, 0.2, 0.3, 0.4]
POS = [0.3, 0.5, 0.6, 0.7, 0.8, 0.9]
Y = np.array([0] * 4 + [1] * 6, dtype=bool)
S = np.array(NEG + POS)


def test_youden_picks_the_threshold_with_the_best_j() -> None:
    threshold, how = choose_threshold(Y, S, "youden")
    assert threshold == pytest.approx(0.5) and how == "youden"


def test_target_sensitivity_gives_the_highest_threshold_that_keeps_it() -> None:
    threshold, _ = choose_threshold(Y, S, "sensitivity>=1.0")
    assert threshold == pytest.approx(0.3)  # all 6 positives at >= 0.3
    said = S >= threshold
    assert said[Y].all()


def test_target_specificity_gives_the_lowest_threshold_that_keeps_it() -> None:
    threshold, _ = choose_threshold(Y, S, "specificity>=0.75")
    assert threshold == pytest.approx(0.4)  # 0.4 itself counts as positive: 3 of 4 negatives below
    assert (S[~Y] < threshold).mean() >= 0.75


def test_fixed_and_degenerate_rules() -> None:
    assert choose_threshold(Y, S, "0.65") == (0.65, "fixed 0.65")
    threshold, how = choose_threshold(np.ones(5, bool), np.random.rand(5), "youden")
    assert threshold == 0.5 and "needs both classes" in how
    with pytest.raises(ConfigError, match="not understood"):
        check_rule("sensitivity>95")


def test_operating_points() -> None:
    points = operating_points(Y, S)
    # specificity >= 0.90 needs threshold above 0.4: then 5 of 6 positives are caught
    assert points["sensitivity_at_specificity_0.90"] == pytest.approx(5 / 6)
    # sensitivity >= 0.95 needs every positive (threshold 0.3): 2 of 4 negatives stay below
    assert points["specificity_at_sensitivity_0.95"] == pytest.approx(0.5)
