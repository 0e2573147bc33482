"""One evaluation of predictions: figures with CIs, threshold, calibration; calibrate_spec and
the plots of a split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medsight.bundle import BundleSpec, softmax
from medsight.evaluation.calibration import expected_calibration_error, fit_temperature
from medsight.evaluation.summary import calibrate_spec, evaluate_predictions, write_plots
from medsight.evaluation.thresholds import choose_threshold


def _spec(**update) -> BundleSpec:
    base = {
        "model_name": "malaria_lenet",
        "class_names": ["NORMAL", "PNEUMONIA"],
        "positive_class": "PNEUMONIA",
        "image_size": (8, 8),
        "channels": 1,
        "mean": (0.0,),
        "std": (1.0,),
        "threshold": 0.4,
        "threshold_rule": "youden on the validation split",
        "temperature": 1.5,
    }
    return BundleSpec(**{**base, **update})


MULTI = {"class_names": ["a", "b", "c"], "positive_class": None}
BINARY_FIGURES = ["accuracy", "sensitivity", "specificity", "ppv", "npv", "f1", "mcc"]
BINARY_FIGURES += ["balanced_accuracy", "roc_auc", "pr_auc", "brier", "ece"]


def _binary(n: int = 150, seed: int = 0, scale: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and logits a model half-sure of itself would give (positives score higher)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    logits = np.stack([-(y - 0.5), y - 0.5], axis=1) * scale + rng.normal(0, 1.5, (n, 2))
    return y, logits


def _multiclass(n: int = 150, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    return y, np.eye(3)[y] * 2.0 + rng.normal(0, 1.2, (n, 3))


def test_binary_figures_all_have_intervals_around_them() -> None:
    y, logits = _binary()
    metrics = evaluate_predictions(y, logits, _spec(), resamples=40)
    assert metrics["n"] == 150
    for key in BINARY_FIGURES:
        figure = metrics["figures"][key]
        assert figure["value"] == metrics[key], key
        assert figure["ci_low"] < figure["ci_high"], key
        assert figure["ci_low"] <= figure["value"] <= figure["ci_high"], key
    assert metrics["bootstrap"]["resamples"] == 40 and metrics["bootstrap"]["unit"] == "image"


def test_figures_are_at_the_threshold_on_the_calibrated_probability() -> None:
    y, logits = _binary()
    spec = _spec(threshold=0.3, temperature=2.5)
    metrics = evaluate_predictions(y, logits, spec, resamples=20)
    said = softmax(logits, 2.5)[:, 1] >= 0.3
    assert metrics["accuracy"] == pytest.approx((said == (y == 1)).mean())
    assert metrics["sensitivity"] == pytest.approx(said[y == 1].mean())
    assert metrics["threshold"] == 0.3
    assert metrics["threshold_rule"] == "youden on the validation split"


def test_patient_groups_are_the_bootstrap_unit() -> None:
    y, logits = _binary(n=120)
    groups = [f"patient{i // 3}" for i in range(120)]
    metrics = evaluate_predictions(y, logits, _spec(), groups=groups, resamples=10)
    assert metrics["bootstrap"]["unit"] == "patient" and metrics["bootstrap"]["groups"] == 40


def test_seeded_evaluation_is_reproducible() -> None:
    y, logits = _binary()
    first = evaluate_predictions(y, logits, _spec(), resamples=12, seed=3)
    assert first == evaluate_predictions(y, logits, _spec(), resamples=12, seed=3)
    other = evaluate_predictions(y, logits, _spec(), resamples=12, seed=4)
    assert first["figures"] != other["figures"] and first["accuracy"] == other["accuracy"]


def test_binary_operating_points() -> None:
    y, logits = _binary()
    points = evaluate_predictions(y, logits, _spec(), resamples=10)["operating_points"]
    assert set(points) == {
        "sensitivity_at_specificity_0.90",
        "sensitivity_at_specificity_0.95",
        "specificity_at_sensitivity_0.90",
        "specificity_at_sensitivity_0.95",
    }
    assert points["sensitivity_at_specificity_0.90"] >= points["sensitivity_at_specificity_0.95"]


def test_multiclass_has_no_threshold_rule_or_operating_points() -> None:
    y, logits = _multiclass()
    metrics = evaluate_predictions(y, logits, _spec(**MULTI), resamples=15)
    for key in ("threshold", "threshold_rule", "operating_points", "positive_class"):
        assert key not in metrics, key
    assert metrics["accuracy"] == pytest.approx((logits.argmax(1) == y).mean())
    for key in ("macro_f1", "micro_f1", "roc_auc", "micro_roc_auc"):
        assert (
            metrics["figures"][key]["ci_low"] <= metrics[key] <= metrics["figures"][key]["ci_high"]
        )


def test_calibration_before_and_after() -> None:
    y, logits = _binary(scale=6.0)  # over-confident logits
    metrics = evaluate_predictions(y, logits, _spec(temperature=3.0), resamples=10)
    calibration = metrics["calibration"]
    assert calibration["temperature"] == 3.0
    assert calibration["ece_before"] == pytest.approx(
        expected_calibration_error(y, softmax(logits))
    )
    assert calibration["ece_after"] == pytest.approx(
        expected_calibration_error(y, softmax(logits, 3.0))
    )
    assert calibration["ece_after"] == metrics["ece"]  # the figures use calibrated probabilities
    for key in ("reliability_before", "reliability_after"):
        assert sum(row["count"] for row in calibration[key]) == len(y)
    # at T = 1 before and after are the same
    same = evaluate_predictions(y, logits, _spec(temperature=1.0), resamples=10)["calibration"]
    assert same["ece_before"] == same["ece_after"]
    assert same["reliability_before"] == same["reliability_after"]


def test_no_images_gives_counts_only() -> None:
    metrics = evaluate_predictions(np.array([], dtype=int), np.zeros((0, 2)), _spec())
    assert metrics["n"] == 0 and "no images: nothing to evaluate" in metrics["notes"]
    for key in ("figures", "bootstrap", "threshold", "threshold_rule", "calibration"):
        assert key not in metrics, key


@pytest.mark.parametrize(
    ("right", "n", "interval"),
    [
        (0, 20, "[0.000, 0.168]"),  # every image wrong: 1 - 0.025 ** (1 / 20) = 0.168
        (12, 12, "[0.735, 1.000]"),  # every image right: 0.025 ** (1 / 12) = 0.735
    ],
)
def test_an_accuracy_without_bootstrap_spread_gets_the_exact_interval(
    right: int, n: int, interval: str
) -> None:
    y = np.array([0, 1] * (n // 2))
    correct = np.arange(n) < right
    said = np.where(correct, y, 1 - y)
    logits = np.where(np.arange(2)[None, :] == said[:, None], 4.0, -4.0)
    metrics = evaluate_predictions(y, logits, _spec(threshold=0.5), resamples=20)
    figure = metrics["figures"]["accuracy"]
    assert figure["ci_low"] == figure["ci_high"] == right / n
    (note,) = [n for n in metrics["notes"] if "Clopper-Pearson" in n]
    assert f"({right} of {n} right)" in note and interval in note


def test_no_exact_interval_note_when_the_bootstrap_varies() -> None:
    y, logits = _binary()
    metrics = evaluate_predictions(y, logits, _spec(), resamples=20)
    assert not any("Clopper-Pearson" in n for n in metrics["notes"])


def test_too_few_resamples_do_not_claim_every_resample_agrees() -> None:
    y, logits = _binary()
    metrics = evaluate_predictions(y, logits, _spec(), resamples=5)
    assert metrics["figures"]["accuracy"]["ci_low"] is None  # too few for an interval
    assert not any("every bootstrap resample has the same accuracy" in n for n in metrics["notes"])


# calibrate_spec


def _val(n: int = 3000, true_t: float = 2.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (n, 2))
    p = softmax(logits, true_t).astype(float)
    y = (rng.random(n) < p[:, 1] / p.sum(1)).astype(int)
    return y, logits


def test_calibrate_spec_fits_the_temperature_then_the_threshold() -> None:
    y, logits = _val()
    spec = _spec(temperature=1.0, threshold=0.5, threshold_rule="fixed 0.5")
    fitted = calibrate_spec(spec, y, logits, "youden", calibrate=True)
    assert fitted.temperature == pytest.approx(fit_temperature(logits, y))
    assert fitted.temperature == pytest.approx(2.0, rel=0.15)
    expected, _ = choose_threshold(y == 1, softmax(logits, fitted.temperature)[:, 1], "youden")
    assert fitted.threshold == pytest.approx(expected)
    assert fitted.threshold_rule == "youden on the validation split"
    assert spec.temperature == 1.0 and spec.threshold == 0.5  # the given spec is left alone


@pytest.mark.parametrize("rule", ["sensitivity>=0.95", "specificity>=0.9"])
def test_calibrate_spec_applies_target_rules_on_val(rule: str) -> None:
    y, logits = _val(n=800)
    fitted = calibrate_spec(_spec(), y, logits, rule, calibrate=True)
    said = softmax(logits, fitted.temperature)[:, 1] >= fitted.threshold
    if rule.startswith("sensitivity"):
        assert said[y == 1].mean() >= 0.95
    else:
        assert (~said[y == 0]).mean() >= 0.9
    assert fitted.threshold_rule == f"{rule} on the validation split"


def test_a_positive_class_second_or_first_is_the_one_thresholded() -> None:
    y, logits = _val(n=800)
    first = _spec(class_names=["PNEUMONIA", "NORMAL"])  # disease class at index 0
    fitted = calibrate_spec(first, 1 - y, logits[:, ::-1], "youden", calibrate=True)
    reference = calibrate_spec(_spec(), y, logits, "youden", calibrate=True)
    assert fitted.threshold == pytest.approx(reference.threshold)
    assert fitted.temperature == pytest.approx(reference.temperature, rel=1e-3)


def test_a_fixed_rule_is_not_said_to_come_from_val() -> None:
    y, logits = _val(n=400)
    fitted = calibrate_spec(_spec(), y, logits, "0.3", calibrate=True)
    assert fitted.threshold == 0.3 and fitted.threshold_rule == "fixed 0.3"


def test_a_val_split_of_one_class_keeps_05_and_says_why() -> None:
    _, logits = _val(n=50)
    fitted = calibrate_spec(_spec(), np.ones(50, int), logits, "youden", calibrate=True)
    assert fitted.temperature == 1.0  # nothing to fit either
    assert fitted.threshold == 0.5
    assert fitted.threshold_rule == "fixed 0.5 (youden needs both classes in the validation split)"


def test_calibrate_false_keeps_t_at_one() -> None:
    y, logits = _val(n=800)
    fitted = calibrate_spec(_spec(temperature=1.7), y, logits, "youden", calibrate=False)
    assert fitted.temperature == 1.0
    expected, _ = choose_threshold(y == 1, softmax(logits)[:, 1], "youden")
    assert fitted.threshold == pytest.approx(expected)  # on the uncalibrated probability


def test_multiclass_keeps_its_threshold_untouched() -> None:
    y, logits = _multiclass(n=400)
    spec = _spec(**MULTI, threshold=0.42, threshold_rule="something else")
    fitted = calibrate_spec(spec, y, logits, "youden", calibrate=True)
    assert fitted.threshold == 0.42 and fitted.threshold_rule == "something else"
    assert fitted.temperature == pytest.approx(fit_temperature(logits, y))
    assert fitted.temperature != 1.5


# write_plots


def _write(folder: Path, spec: BundleSpec, y: np.ndarray, logits: np.ndarray) -> None:
    probs = spec.probabilities(logits)
    metrics = evaluate_predictions(y, logits, spec, resamples=2)
    pixels = np.random.default_rng(0).integers(0, 255, (len(y), 8, 8, 1), dtype=np.uint8)
    write_plots(folder, pixels, y, probs, spec, metrics, "test", groups=None)


def _pngs(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.read_bytes()[:4] == b"\x89PNG"}


def test_binary_plots(tmp_path: Path) -> None:
    folder = tmp_path / "plots" / "nested"  # made when missing
    y, logits = _binary(n=60)
    _write(folder, _spec(), y, logits)
    expected = {"confusion_matrix.png", "roc_pr.png", "reliability.png", "worst_errors.png"}
    assert _pngs(folder) == expected
    assert {p.name for p in folder.iterdir()} == _pngs(folder)


def test_multiclass_plots_remove_a_stale_roc_pr(tmp_path: Path) -> None:
    (tmp_path / "roc_pr.png").write_bytes(b"\x89PNG stale from a binary evaluation")
    y, logits = _multiclass(n=60)
    _write(tmp_path, _spec(**MULTI), y, logits)
    assert _pngs(tmp_path) == {"confusion_matrix.png", "reliability.png", "worst_errors.png"}


def test_one_class_gives_no_roc_pr(tmp_path: Path) -> None:
    (tmp_path / "roc_pr.png").write_bytes(b"stale")
    y = np.ones(30, int)
    _, logits = _binary(n=30)
    _write(tmp_path, _spec(), y, logits)
    assert not (tmp_path / "roc_pr.png").exists()
    assert {"confusion_matrix.png", "reliability.png"} <= _pngs(tmp_path)


def test_no_mistakes_remove_a_stale_worst_errors(tmp_path: Path) -> None:
    (tmp_path / "worst_errors.png").write_bytes(b"stale")
    y = np.array([0, 1] * 10)
    logits = np.where(np.arange(2)[None, :] == y[:, None], 3.0, -3.0)
    _write(tmp_path, _spec(), y, logits)
    assert not (tmp_path / "worst_errors.png").exists()
    assert _pngs(tmp_path) == {"confusion_matrix.png", "roc_pr.png", "reliability.png"}
