"""The figures: each writes a real PNG; the worst errors are the most confident mistakes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medsight.bundle import softmax
from medsight.evaluation.calibration import reliability_bins
from medsight.evaluation.plots import (
    plot_confusion,
    plot_curves,
    plot_prediction_grid,
    plot_reliability,
    plot_roc_pr,
    plot_worst_errors,
    worst_errors,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path: Path) -> tuple[int, int]:
    """Asserts ``path`` is a non-empty, decodable PNG; its (width, height)."""
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as image:
        image.load()
        return image.size


@pytest.mark.parametrize(
    "columns",
    [
        ["train_loss", "val_loss", "train_accuracy", "val_accuracy"],
        ["train_loss", "train_accuracy"],  # no validation columns: drawn without them
    ],
)
def test_plot_curves(tmp_path: Path, columns: list[str]) -> None:
    history = pd.DataFrame({"epoch": [1, 2, 3], **{c: [0.9, 0.5, 0.3] for c in columns}})
    path = tmp_path / "curves.png"
    plot_curves(history, path)
    width, height = _is_png(path)
    assert width > height  # two panels side by side


@pytest.mark.parametrize(
    "matrix",
    [
        np.array([[5, 1], [2, 7]]),
        np.array([[3, 0, 1], [0, 0, 0], [1, 1, 4]]),  # a class with no images: no 0/0 crash
    ],
)
def test_plot_confusion(tmp_path: Path, matrix: np.ndarray) -> None:
    names = [f"class{i}" for i in range(len(matrix))]
    path = tmp_path / "confusion.png"
    plot_confusion(matrix, names, path, "test")
    _is_png(path)


@pytest.mark.parametrize("channels", [1, 3])
def test_plot_prediction_grid(tmp_path: Path, channels: int) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (5, 12, 12, channels), dtype=np.uint8)
    labels = np.array([0, 1, 0, 1, 1])
    predicted = np.array([0, 0, 0, 1, 0])
    path = tmp_path / "grid.png"
    plot_prediction_grid(pixels, labels, predicted, ["a", "b"], path, n=16)  # n > images
    _is_png(path)


def test_plot_reliability(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (200, 2))
    y = rng.integers(0, 2, 200)
    path = tmp_path / "reliability.png"
    plot_reliability(
        reliability_bins(y, softmax(logits)), reliability_bins(y, softmax(logits, 3.0)), path
    )
    _is_png(path)


# rows: true label, probabilities, predicted; wrong ones are 1 (p_true 0.3), 2 (0.05), 4 (0.45)
LABELS = np.array([0, 0, 1, 1, 1, 0])
PROBS = np.array([[0.9, 0.1], [0.3, 0.7], [0.95, 0.05], [0.2, 0.8], [0.55, 0.45], [0.6, 0.4]])
PREDICTED = PROBS.argmax(1)


@pytest.mark.parametrize(("n", "expected"), [(8, [2, 1, 4]), (2, [2, 1]), (1, [2]), (0, [])])
def test_worst_errors_are_the_most_confident_mistakes_first(n: int, expected: list[int]) -> None:
    assert worst_errors(LABELS, PROBS, PREDICTED, n).tolist() == expected


def test_worst_errors_follow_the_decision_not_the_argmax() -> None:
    # at a threshold of 0.3 on class 1, row 5 (p = 0.4, true 0) is a mistake, row 4 is not
    predicted = (PROBS[:, 1] >= 0.3).astype(int)
    assert worst_errors(LABELS, PROBS, predicted, 8).tolist() == [2, 1, 5]


def test_ties_keep_their_order() -> None:
    labels = np.array([0, 0, 0])
    probs = np.array([[0.2, 0.8], [0.2, 0.8], [0.2, 0.8]])
    assert worst_errors(labels, probs, np.array([1, 1, 1]), 3).tolist() == [0, 1, 2]


def test_no_mistakes_no_worst_errors() -> None:
    assert worst_errors(LABELS, PROBS, LABELS, 8).tolist() == []


def test_multiclass_worst_errors_rank_by_the_wrong_class_probability() -> None:
    labels = np.array([0, 0])
    probs = np.array([[0.10, 0.45, 0.45], [0.20, 0.80, 0.00]])
    predicted = np.array([1, 1])
    assert worst_errors(labels, probs, predicted, 2).tolist() == [1, 0]


def test_plot_worst_errors_draws_the_mistakes(tmp_path: Path) -> None:
    pixels = np.zeros((6, 10, 10, 1), dtype=np.uint8)
    path = tmp_path / "worst.png"
    assert plot_worst_errors(pixels, LABELS, PROBS, PREDICTED, ["a", "b"], path, n=8) is True
    _is_png(path)


def test_plot_worst_errors_without_mistakes_writes_nothing(tmp_path: Path) -> None:
    pixels = np.zeros((6, 10, 10, 3), dtype=np.uint8)
    path = tmp_path / "worst.png"
    assert plot_worst_errors(pixels, LABELS, PROBS, LABELS, ["a", "b"], path) is False
    assert not path.exists()


def _scores(n: int = 80) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    is_positive = rng.random(n) < 0.4
    return is_positive, is_positive * 0.8 + rng.normal(0, 0.5, n)


@pytest.mark.parametrize(
    "groups",
    [
        None,
        [f"patient{i // 4}" for i in range(80)],  # four images per patient
        [None] * 80,  # no ids: images are resampled
        [f"p{i}" if i % 2 else "" for i in range(80)],  # some ids missing
    ],
)
def test_plot_roc_pr_with_and_without_patients(tmp_path: Path, groups) -> None:
    is_positive, score = _scores()
    path = tmp_path / "roc_pr.png"
    plot_roc_pr(is_positive, score, groups, path, resamples=30)
    width, height = _is_png(path)
    assert width > height


def test_plot_roc_pr_when_resamples_can_miss_a_class(tmp_path: Path) -> None:
    # one positive among 12 images: many resamples draw none and are left out, not a crash
    is_positive = np.array([True] + [False] * 11)
    score = np.linspace(1, 0, 12)
    path = tmp_path / "roc_pr.png"
    plot_roc_pr(is_positive, score, None, path, resamples=20)
    _is_png(path)
