"""The spec's own rules: task kind, calibrated probabilities, the decision and the score."""

from __future__ import annotations

import numpy as np
import pytest

from medsight.bundle import BundleSpec, decide, softmax


def _spec(**changes) -> BundleSpec:
    fields = {
        "model_name": "malaria_lenet",
        "class_names": ["NORMAL", "PNEUMONIA"],
        "positive_class": "PNEUMONIA",
        "image_size": (64, 64),
        "channels": 3,
        "mean": (0.0,),
        "std": (1.0,),
        "threshold": 0.3,
        "temperature": 2.0,
    }
    return BundleSpec(**{**fields, **changes})


@pytest.mark.parametrize(
    ("class_names", "positive", "task", "index"),
    [
        (["NORMAL", "PNEUMONIA"], "PNEUMONIA", "binary", 1),
        (["Parasitized", "Uninfected"], "Parasitized", "binary", 0),
        (["NORMAL", "PNEUMONIA"], None, "multiclass", None),  # no disease class: argmax
        (["NORMAL", "BACTERIAL", "VIRAL"], "VIRAL", "multiclass", None),  # three classes
    ],
)
def test_task_kind_and_positive_index(class_names, positive, task, index) -> None:
    spec = _spec(class_names=class_names, positive_class=positive)
    assert spec.task == task and spec.positive_index == index


def test_probabilities_are_temperature_scaled_unless_raw() -> None:
    logits = np.array([[0.0, 2.0], [1.0, -1.0]])
    spec = _spec()
    assert np.allclose(spec.probabilities(logits), softmax(logits / 2.0))
    assert np.allclose(spec.probabilities(logits, calibrated=False), softmax(logits))
    assert np.allclose(spec.probabilities(logits).sum(1), 1)


def test_binary_decision_is_at_the_threshold_on_the_positive_probability() -> None:
    probs = np.array([[0.75, 0.25], [0.69, 0.31], [0.2, 0.8]])
    assert _spec().decide(probs).tolist() == [0, 1, 1]  # 0.31 >= 0.3: PNEUMONIA
    assert _spec(threshold=0.9).decide(probs).tolist() == [0, 0, 0]
    assert _spec().score(probs).tolist() == pytest.approx([0.25, 0.31, 0.8])


def test_multiclass_decision_is_the_most_probable_class() -> None:
    spec = _spec(class_names=["a", "b", "c"], positive_class=None)
    probs = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    assert spec.decide(probs).tolist() == [1, 0]
    assert spec.score(probs).tolist() == pytest.approx([0.5, 0.6])


def test_decide_takes_one_threshold_per_row() -> None:
    probs = np.array([[0.3, 0.7], [0.4, 0.6]])
    assert decide(probs, 0, 0.5).tolist() == [1, 1]
    assert decide(probs, 0, 0.25).tolist() == [0, 0]
    assert decide(probs, 1, np.array([0.8, 0.5])).tolist() == [0, 1]  # k-fold: each its own


def test_softmax_is_stable_for_large_logits() -> None:
    probs = softmax(np.array([[1000.0, 0.0], [-1000.0, 1000.0]]))
    assert np.isfinite(probs).all() and probs.tolist() == [[1.0, 0.0], [0.0, 1.0]]


def _multi(**changes) -> BundleSpec:
    from medsight.data.multilabel import MultiLabelRule

    names = ["Edema", "Mass", "Effusion"]
    return _spec(
        class_names=names,
        positive_class=None,
        multi_label=MultiLabelRule(labels=names),
        **changes,
    )


def test_multi_label_probabilities_are_independent_sigmoids_per_label() -> None:
    spec = _multi(label_temperatures=[1.0, 2.0, 0.5], label_thresholds=[0.5, 0.2, 0.9])
    assert spec.task == "multilabel" and spec.positive_index is None
    logits = np.array([[0.0, 2.0, 1.0], [-1.0, -1.0, 3.0]])
    probs = spec.probabilities(logits)
    expected = 1 / (1 + np.exp(-logits / np.array([1.0, 2.0, 0.5])))
    assert np.allclose(probs, expected, atol=1e-6)
    assert not np.allclose(probs.sum(axis=1), 1)  # labels do not compete
    raw = spec.probabilities(logits, calibrated=False)
    assert np.allclose(raw, 1 / (1 + np.exp(-logits)), atol=1e-6)
    # each label at its own threshold: row 0: 0.5 >= 0.5, 0.73 >= 0.2, 0.88 < 0.9;
    # row 1: 0.27 < 0.5, 0.38 >= 0.2, 0.998 >= 0.9
    assert spec.decide(probs).tolist() == [[1, 1, 0], [0, 1, 1]]
    assert spec.decision_names(probs) == ["Edema|Mass", "Mass|Effusion"]
    assert spec.decision_names(np.zeros((1, 3))) == ["No Finding"]


def test_a_multi_label_spec_without_fitted_values_uses_one_and_a_half() -> None:
    spec = _multi()
    probs = spec.probabilities(np.array([[0.0, 50.0, -50.0]]))
    assert probs.tolist() == [[0.5, 1.0, 0.0]] and spec.decide(probs).tolist() == [[1, 1, 0]]


def test_single_label_only_commands_refuse_a_multi_label_bundle() -> None:
    from medsight.errors import MedsightError

    _spec().require_single_label("compare")  # a binary bundle passes
    with pytest.raises(MedsightError, match="compare compares one label per image"):
        _multi().require_single_label("compare")
