"""The predictions table: its columns and their order, the one-number score of each row (the
disease class's probability when binary, the top probability otherwise) and the decision at
the bundle's own threshold."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medsight.bundle import BundleSpec, prediction_columns, predictions_frame


def make_spec(
    class_names: list[str], positive_class: str | None = None, threshold: float = 0.5
) -> BundleSpec:
    return BundleSpec(
        model_name="malaria_lenet",
        class_names=class_names,
        positive_class=positive_class,
        image_size=(32, 32),
        channels=3,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        threshold=threshold,
    )


def table(n: int, labels: list[str] | None = None) -> pd.DataFrame:
    labels = labels or [f"label{i}" for i in range(n)]
    return pd.DataFrame({"path": [f"img{i}.png" for i in range(n)], "label": labels})


BINARY = make_spec(["NORMAL", "PNEUMONIA"], "PNEUMONIA", threshold=0.4)
MULTI = make_spec(["a", "b", "c"])


def test_prediction_columns_binary_and_multiclass() -> None:
    assert prediction_columns(BINARY) == [
        "probability",
        "prediction",
        "p_NORMAL",
        "p_PNEUMONIA",
        "in_domain",
        "domain_score",
    ]
    assert prediction_columns(MULTI)[:5] == ["probability", "prediction", "p_a", "p_b", "p_c"]


@pytest.mark.parametrize("spec", [BINARY, MULTI], ids=["binary", "multiclass"])
def test_frame_columns_are_path_label_then_prediction_columns(spec: BundleSpec) -> None:
    n_classes = len(spec.class_names)
    probs = np.full((3, n_classes), 1.0 / n_classes, dtype=np.float32)
    out = predictions_frame(table(3), probs, spec)
    assert list(out.columns) == ["path", "label", *prediction_columns(spec)]
    assert len(out) == 3


def test_binary_probability_is_the_positive_class_and_threshold_decides() -> None:
    # p(PNEUMONIA) just below, at and above the bundle's threshold of 0.4 (not 0.5)
    p_pos = np.array([0.39, 0.4, 0.45, 0.9, 0.1], dtype=np.float32)
    probs = np.stack([1 - p_pos, p_pos], axis=1)
    out = predictions_frame(table(5), probs, BINARY)
    np.testing.assert_array_equal(out["probability"].to_numpy(), p_pos)
    # 0.45 < 0.5 would be NORMAL by argmax; the spec's threshold makes it PNEUMONIA
    assert list(out["prediction"]) == ["NORMAL", "PNEUMONIA", "PNEUMONIA", "PNEUMONIA", "NORMAL"]
    np.testing.assert_array_equal(out["p_NORMAL"].to_numpy(), probs[:, 0])
    np.testing.assert_array_equal(out["p_PNEUMONIA"].to_numpy(), probs[:, 1])


def test_binary_with_the_positive_class_first() -> None:
    spec = make_spec(["MALARIA", "HEALTHY"], "MALARIA", threshold=0.7)
    probs = np.array([[0.69, 0.31], [0.7, 0.3], [0.2, 0.8]], dtype=np.float32)
    out = predictions_frame(table(3), probs, spec)
    np.testing.assert_array_equal(out["probability"].to_numpy(), probs[:, 0])
    assert list(out["prediction"]) == ["HEALTHY", "MALARIA", "HEALTHY"]


def test_multiclass_probability_is_the_top_class_and_prediction_its_name() -> None:
    probs = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3], [0.1, 0.2, 0.7]], dtype=np.float32)
    out = predictions_frame(table(3), probs, MULTI)
    np.testing.assert_array_equal(out["probability"].to_numpy(), probs.max(axis=1))
    np.testing.assert_allclose(out["probability"].to_numpy(), [0.5, 0.6, 0.7], rtol=1e-6)
    assert list(out["prediction"]) == ["b", "a", "c"]
    for i, name in enumerate(MULTI.class_names):
        np.testing.assert_array_equal(out[f"p_{name}"].to_numpy(), probs[:, i])


def test_threshold_is_ignored_when_the_spec_is_multiclass() -> None:
    # a positive class among three classes is not a binary task: argmax, not the threshold
    spec = make_spec(["a", "b", "c"], positive_class="b", threshold=0.1)
    probs = np.array([[0.5, 0.2, 0.3]], dtype=np.float32)
    out = predictions_frame(table(1), probs, spec)
    assert out["prediction"].iloc[0] == "a" and out["probability"].iloc[0] == pytest.approx(0.5)


def test_probability_is_not_rounded() -> None:
    p_pos = np.array([0.123456789, 0.123456780], dtype=np.float64)
    probs = np.stack([1 - p_pos, p_pos], axis=1)
    out = predictions_frame(table(2), probs, BINARY)
    assert out["probability"].iloc[0] != out["probability"].iloc[1]
    assert out["probability"].iloc[0] == pytest.approx(0.123456789, abs=1e-12)


def test_path_and_label_keep_row_order_whatever_the_input_index() -> None:
    frame = table(3, labels=["x", "y", "z"]).set_axis([10, 2, 7])  # e.g. a filtered split
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]], dtype=np.float32)
    out = predictions_frame(frame, probs, BINARY)
    assert list(out.index) == [0, 1, 2]
    assert list(out["path"]) == ["img0.png", "img1.png", "img2.png"]
    assert list(out["label"]) == ["x", "y", "z"]
    assert list(out["prediction"]) == ["NORMAL", "PNEUMONIA", "PNEUMONIA"]


def test_empty_frame_gives_an_empty_table_with_the_columns() -> None:
    out = predictions_frame(table(0), np.zeros((0, 2), dtype=np.float32), BINARY)
    assert len(out) == 0
    assert list(out.columns) == ["path", "label", *prediction_columns(BINARY)]
