"""Patient bootstrap: intervals that cover the truth about 95 % of the time, and that widen when
images of one patient are correlated."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm, rankdata
from sklearn.metrics import roc_auc_score

from medsight.evaluation.bootstrap import bootstrap, group_indices, resample_indices


def _auc(y: np.ndarray, s: np.ndarray):
    """ROC-AUC by the Mann-Whitney rank formula (fast; checked against sklearn below)."""

    def statistic(rows: np.ndarray) -> dict[str, float | None]:
        yy, ss = y[rows].astype(bool), s[rows]
        m, n = int(yy.sum()), int((~yy).sum())
        if m == 0 or n == 0:
            return {"roc_auc": None}
        return {"roc_auc": float((rankdata(ss)[yy].sum() - m * (m + 1) / 2) / (m * n))}

    return statistic


def test_ci_covers_the_true_auc_in_about_95_percent_of_draws() -> None:
    # binormal model: scores N(0,1) for negatives, N(d,1) for positives -> AUC = Phi(d / sqrt 2)
    d = 1.0
    true_auc = norm.cdf(d / np.sqrt(2))
    rng = np.random.default_rng(0)
    covered, draws = 0, 200
    for i in range(draws):
        y = rng.integers(0, 2, 80)
        s = rng.normal(d * y, 1.0)
        ci, record = bootstrap(_auc(y, s), len(y), resamples=200, seed=i)
        covered += ci["roc_auc"]["ci_low"] <= true_auc <= ci["roc_auc"]["ci_high"]
    assert record["unit"] == "image" and record["resamples"] == 200 and record["seed"] == i
    assert 0.90 <= covered / draws <= 0.99, covered / draws


def test_patient_resampling_widens_intervals_of_correlated_images() -> None:
    rng = np.random.default_rng(1)
    patients = np.repeat(np.arange(40), 10)  # 40 patients, 10 near-identical images each
    y = np.repeat(rng.integers(0, 2, 40), 10)
    s = np.repeat(rng.normal(y[::10] * 1.0, 1.0), 10) + rng.normal(0, 0.05, 400)
    by_image, rec_i = bootstrap(_auc(y, s), 400, None, resamples=300)
    by_patient, rec_p = bootstrap(_auc(y, s), 400, list(patients), resamples=300)
    assert _auc(y, s)(np.arange(400))["roc_auc"] == pytest.approx(roc_auc_score(y, s))
    width = lambda ci: ci["roc_auc"]["ci_high"] - ci["roc_auc"]["ci_low"]  # noqa: E731
    assert rec_i["unit"] == "image" and rec_p["unit"] == "patient" and rec_p["groups"] == 40
    assert width(by_patient) > 2 * width(by_image)
    assert by_patient["roc_auc"]["value"] == pytest.approx(roc_auc_score(y, s))


def test_groups_without_ids_fall_back_to_images_and_missing_ids_are_their_own_group() -> None:
    parts, unit = group_indices(["", None, ""], 3)
    assert unit == "image" and len(parts) == 3
    parts, unit = group_indices(["a", "a", None, "b"], 4)
    assert unit == "patient" and sorted(len(p) for p in parts) == [1, 1, 2]


def test_undefined_resamples_are_counted_not_crashing() -> None:
    y = np.array([1] + [0] * 9)  # one positive: many resamples miss it
    s = np.linspace(1, 0, 10)
    ci, record = bootstrap(_auc(y, s), 10, resamples=200, seed=0)
    assert record["undefined"]["roc_auc"] > 0
    assert ci["roc_auc"]["value"] == pytest.approx(1.0)


def test_seeded_bootstrap_is_reproducible() -> None:
    rng = np.random.default_rng(2)
    y, s = rng.integers(0, 2, 60), rng.random(60)
    first, _ = bootstrap(_auc(y, s), 60, resamples=100, seed=7)
    again, _ = bootstrap(_auc(y, s), 60, resamples=100, seed=7)
    other, _ = bootstrap(_auc(y, s), 60, resamples=100, seed=8)
    assert first == again and first != other


def test_a_perfect_small_test_set_gets_an_exact_interval_note() -> None:
    from medsight.bundle import BundleSpec
    from medsight.evaluation.summary import evaluate_predictions

    spec = BundleSpec(
        model_name="malaria_lenet",
        class_names=["COVID-19", "normal"],
        positive_class="COVID-19",
        image_size=(8, 8),
        channels=1,
        mean=(0.0,),
        std=(1.0,),
    )
    y = np.array([0] * 8 + [1] * 20)
    logits = np.where(y[:, None] == np.arange(2)[None, :], 3.0, -3.0)  # every image right
    metrics = evaluate_predictions(y, logits, spec, resamples=50)
    assert metrics["figures"]["accuracy"] == {"value": 1.0, "ci_low": 1.0, "ci_high": 1.0}
    note = next(n for n in metrics["notes"] if "Clopper-Pearson" in n)
    assert "28 of 28" in note and "[0.877, 1.000]" in note  # (0.025) ** (1 / 28) = 0.877


@pytest.mark.parametrize(
    "groups",
    [None, ["p1", "p1", "p2", None, "p3", "p3", "p3", "p2", "p4"]],
    ids=["images", "patients"],
)
def test_resamples_are_the_drawn_groups_rows_one_after_another(groups: list | None) -> None:
    """The vectorised resampler gives exactly np.concatenate of the drawn groups, so intervals
    made before it came are reproduced by the same seed."""
    parts, _ = group_indices(groups, 9)
    rng = np.random.default_rng(5)
    expected = [np.concatenate([parts[g] for g in rng.integers(0, len(parts), len(parts))])]
    expected += [np.concatenate([parts[g] for g in rng.integers(0, len(parts), len(parts))])]
    got = list(resample_indices(parts, 2, seed=5))
    assert len(got) == 2
    for rows, want in zip(got, expected, strict=True):
        np.testing.assert_array_equal(rows, want)
