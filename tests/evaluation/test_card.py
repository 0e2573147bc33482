"""The model card: what it says for binary and multi-class bundles, figures, data and audits."""

from __future__ import annotations

import numpy as np
import pytest

from medsight.bundle import BundleSpec
from medsight.config import load_recipe
from medsight.evaluation.card import DATA_LICENCES, model_card
from medsight.evaluation.metrics import class_rows
from medsight.evaluation.multilabel import PER_LABEL_HEADER, multilabel_metrics, per_label_rows
from medsight.evaluation.report import BINARY_ROWS, MULTICLASS_ROWS, MULTILABEL_ROWS, figure_text
from medsight.evaluation.summary import evaluate_predictions
from medsight.models.lung_spec import LungSpec


def _spec(**update) -> BundleSpec:
    base = {
        "model_name": "malaria_lenet",
        "class_names": ["NORMAL", "PNEUMONIA"],
        "positive_class": "PNEUMONIA",
        "image_size": (64, 48),
        "channels": 1,
        "mean": (0.5,),
        "std": (0.25,),
        "threshold": 0.4321,
        "threshold_rule": "youden on the validation split",
        "temperature": 1.5,
    }
    return BundleSpec(**{**base, **update})


MULTI = {"class_names": ["COVID", "normal", "pneumonia"], "positive_class": None}


def _lines(card: str) -> list[str]:
    """The card's Markdown lines after the Hub's metadata block."""
    return card.split("\n---\n", 1)[1].splitlines()


def test_not_for_clinical_use_comes_first() -> None:
    card = model_card(_spec(), {})
    lines = _lines(card)
    assert lines[0] == "# Model card: malaria_lenet"  # no recipe: the model's name
    assert lines[2].startswith("**Not for clinical use.**")
    assert "Do not use it to diagnose or treat patients." in lines[2]
    assert card.endswith("\n")


def test_the_title_is_the_recipe_when_the_bundle_has_one() -> None:
    assert _lines(model_card(_spec(recipe="pneumonia"), {}))[0] == "# Model card: pneumonia"


def test_binary_card_names_the_disease_class_and_the_threshold() -> None:
    lines = _lines(model_card(_spec(), {}))
    assert (
        "Research on classifying NORMAL, PNEUMONIA images (disease class: PNEUMONIA). "
        "Inputs should resemble the training data (same modality, view and preprocessing)."
    ) in lines
    assert (
        "- Threshold 0.4321 on the calibrated probability (youden on the validation split)" in lines
    )
    assert "- Temperature scaling: T = 1.500 (fitted on the validation split)" in lines
    assert not any("Multi-class" in line for line in lines)


def test_multiclass_card_has_no_threshold_and_its_own_rows() -> None:
    card = model_card(_spec(**MULTI), {"accuracy": 0.8})
    lines = _lines(card)
    assert "- Multi-class: the most probable class is predicted" in lines
    assert not any(line.startswith("- Threshold") for line in lines)
    assert "disease class" not in card
    table = [line for line in lines if line.startswith("| ") and "Figure" not in line]
    rows = MULTICLASS_ROWS + class_rows(MULTI["class_names"])
    assert [line.split(" | ")[0][2:] for line in table] == [label for _, label in rows]
    assert "| F1 (macro) | n/a |" in lines


def test_a_positive_class_with_three_classes_is_multiclass() -> None:
    spec = _spec(class_names=["a", "b", "c"], positive_class="b")
    assert "- Multi-class: the most probable class is predicted" in _lines(model_card(spec, {}))


def test_binary_rows_are_all_listed_in_order() -> None:
    lines = _lines(model_card(_spec(), {}))
    start = lines.index("| Figure | Value |") + 2
    labels = [line.split(" | ")[0][2:] for line in lines[start : start + len(BINARY_ROWS)]]
    assert labels == [label for _, label in BINARY_ROWS]


@pytest.mark.parametrize(
    ("metrics", "row"),
    [
        (
            {"accuracy": 0.9, "figures": {"accuracy": {"ci_low": 0.85, "ci_high": 0.9512}}},
            "| Accuracy | 0.900 (95 % CI 0.850 to 0.951) |",
        ),
        ({"accuracy": 0.9}, "| Accuracy | 0.900 |"),  # no figures: no interval
        (
            {"accuracy": 0.9, "figures": {"accuracy": {"ci_low": None, "ci_high": None}}},
            "| Accuracy | 0.900 |",
        ),
        ({"accuracy": None}, "| Accuracy | n/a |"),
        ({}, "| Accuracy | n/a |"),
        ({"roc_auc": 0.0}, "| ROC-AUC | 0.000 |"),  # zero is a figure, not a missing one
    ],
)
def test_figures_with_and_without_intervals(metrics: dict, row: str) -> None:
    assert row in _lines(model_card(_spec(), metrics))


def test_a_real_evaluation_renders_every_figure_with_its_interval() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 120)
    logits = np.stack([-y * 1.5, y * 1.5], axis=1) + rng.normal(0, 1.5, (120, 2))
    spec = _spec()
    metrics = {**evaluate_predictions(y, logits, spec, resamples=100), "split": "test"}
    lines = _lines(model_card(spec, metrics))
    assert "## Performance (test set, 120 images)" in lines
    for key, label in BINARY_ROWS:
        figure = metrics["figures"][key]
        expected = (
            f"| {label} | {metrics[key]:.3f} (95 % CI {figure['ci_low']:.3f} to "
            f"{figure['ci_high']:.3f}) |"
        )
        assert expected in lines, key
    calibration = metrics["calibration"]
    assert (
        f"- Expected calibration error {calibration['ece_before']:.3f} before, "
        f"{calibration['ece_after']:.3f} after"
    ) in lines
    majority = metrics["baselines"]
    assert (
        f"| Baseline: always {majority['majority_class']} (accuracy) | "
        f"{majority['majority_accuracy']:.3f} |"
    ) in lines


def test_without_split_or_count_the_set_is_an_evaluation_of_zero_images() -> None:
    lines = _lines(model_card(_spec(), {}))
    assert "## Performance (evaluation set, 0 images)" in lines
    assert not any(line.startswith("- Expected calibration error") for line in lines)
    assert not any("Baseline" in line for line in lines)
    assert "- Source: unknown" in lines
    assert "- Split by: n/a; leakage check: not checked" in lines


def test_split_and_leakage_facts_are_quoted() -> None:
    metrics = {"split_by": "patient", "leakage": "no patient in two splits"}
    assert "- Split by: patient; leakage check: no patient in two splits" in _lines(
        model_card(_spec(), metrics)
    )


@pytest.mark.parametrize(
    ("lungs", "expected"),
    [
        (
            LungSpec(val_dice=0.91234, trained_on="JSRT masks"),
            "- Every image is first cropped to its lung field by a U-Net "
            "(tu-tf_efficientnet_lite0, 128 px; trained on JSRT masks, Dice 0.912 on held-out "
            "masks); images without a believable lung field are left whole",
        ),
        (
            LungSpec(encoder="resnet18", size=96),
            "- Every image is first cropped to its lung field by a U-Net (resnet18, 96 px; "
            "trained on unknown masks); images without a believable lung field are left whole",
        ),
    ],
)
def test_lung_crop_line(lungs: LungSpec, expected: str) -> None:
    lines = _lines(model_card(_spec(lung_crop=lungs), {}))
    assert expected in lines
    # it sits in the Model section, right after the architecture
    assert lines[lines.index(expected) - 1].startswith("- Architecture: `malaria_lenet`")


def test_no_lung_crop_line_without_a_lung_crop() -> None:
    assert "lung field" not in model_card(_spec(), {})


@pytest.mark.parametrize(("exposure", "equalised"), [("equalize", True), ("none", False)])
def test_architecture_line(exposure: str, equalised: bool) -> None:
    lines = _lines(model_card(_spec(exposure=exposure), {}))
    line = next(line for line in lines if line.startswith("- Architecture"))
    assert line.startswith(
        "- Architecture: `malaria_lenet`; input 64x48, 1 channel(s), mean [0.5], std [0.25]"
    )
    assert line.endswith("; every image histogram-equalised first") is equalised


def test_training_line_with_and_without_a_recipe() -> None:
    recipe = load_recipe("malaria")
    lines = _lines(model_card(_spec(medsight_version="9.9.9"), {}, recipe))
    assert f"- Trained by medsight 9.9.9 with the recipe `malaria`: {recipe.description}" in lines
    assert "- Trained by medsight (unknown version)" in _lines(model_card(_spec(), {}))


@pytest.mark.parametrize(
    ("source", "licences"),
    [
        ("folder /data/malaria", ["malaria"]),
        ("csv /data/Chest_XRay/test.csv", ["chest_xray"]),
        ("csv /runs/covid/curation.csv", ["covid"]),
        ("folder /data/covid + folder /data/chest_xray", ["chest_xray", "covid"]),
        ("folder /data/my_hospital", []),
    ],
)
def test_data_licence_lines_follow_the_source(source: str, licences: list[str]) -> None:
    metrics = {"data": {"source": source}}
    lines = _lines(model_card(_spec(), metrics))
    assert f"- Source: {source}" in lines
    found = [line for line in lines if line.startswith("- Licence: ")]
    assert found == [f"- Licence: {DATA_LICENCES[key]}" for key in licences]


def _limitations(card: str) -> list[str]:
    lines = _lines(card)
    return lines[lines.index("## Known limitations") + 1 :]


@pytest.mark.parametrize(
    ("audit", "expected", "absent"),
    [
        (
            {"warnings": ["the model's features tell the image sources apart"]},
            ["- Shortcut audit: the model's features tell the image sources apart"],
            ["no shortcut found", "No shortcut audit run yet"],
        ),
        (
            {"warnings": ["one", "two"]},
            ["- Shortcut audit: one", "- Shortcut audit: two"],
            ["no shortcut found"],
        ),
        (
            {"warnings": []},
            ["- Shortcut audit: no shortcut found by the source and occlusion probes."],
            ["No shortcut audit run yet"],
        ),
        (None, ["- No shortcut audit run yet (`medsight audit`)."], ["Shortcut audit:"]),
    ],
)
def test_audit_findings(audit, expected: list[str], absent: list[str]) -> None:
    card = model_card(_spec(), {}, audit=audit)
    limitations = _limitations(card)
    for line in expected:
        assert line in limitations
    for text in absent:
        assert text not in card


def test_notes_and_the_split_warning_are_limitations() -> None:
    metrics = {
        "notes": ["roc_auc undefined: only one class among the true labels"],
        "split_warning": "split by IMAGE, not by patient",
    }
    limitations = _limitations(model_card(_spec(), metrics))
    assert limitations[0].startswith("- Figures come from one dataset")
    assert limitations[1:] == [
        "- roc_auc undefined: only one class among the true labels",
        "- split by IMAGE, not by patient",
        "- No shortcut audit run yet (`medsight audit`).",
    ]


def test_no_split_warning_no_line() -> None:
    assert len(_limitations(model_card(_spec(), {"split_warning": ""}))) == 2


NO_IDS = "no identical image appears in more than one split; patients not checked: none of the 300 images has a patient id"  # noqa: E501


@pytest.mark.parametrize(
    ("split_by", "without", "expected"),
    [
        ("patient", 0, "- Split by: patient; leakage check: "),
        ("image", 300, "- Split by: image: split by image for 300 of 300 images (no patient id); "),
        (
            "mixed",
            40,
            "- Split by: mixed: split by image for 40 of 300 images (no patient id), by patient "
            "for the rest; ",
        ),
        ("image", 0, "- Split by: image; leakage check: "),  # the recipe's own choice
    ],
)
def test_the_split_line_names_images_without_a_patient(
    split_by: str, without: int, expected: str
) -> None:
    metrics = {
        "split_by": split_by,
        "images_without_patient": without,
        "data": {"n_images": 300},
        "leakage": NO_IDS,
    }
    card = model_card(_spec(), metrics)
    assert any(line.startswith(expected) for line in _lines(card)), card
    if split_by != "patient":
        assert "Split by: patient" not in card


@pytest.mark.parametrize(
    ("metrics", "line"),
    [
        (
            {"seen_in_training": 4, "n": 8},
            "- 4 of the 8 evaluated images were in the model's training or validation data "
            "(same file or same patient): these figures are optimistic (`--exclude-seen` leaves "
            "them out).",
        ),
        (
            {"seen_in_training": None, "n": 8},
            "- Whether the evaluated images include ones the model was trained or tuned on is "
            "unknown: the bundle records no training images.",
        ),
        ({"seen_in_training": 0, "n": 8}, None),
        ({"n": 8}, None),  # a training run's own held-out split: nothing to say
    ],
)
def test_images_the_model_had_seen_are_a_known_limitation(metrics: dict, line: str | None) -> None:
    limitations = model_card(_spec(), metrics).split("## Known limitations")[1].splitlines()
    mentions = [text for text in limitations if "training or validation" in text or "tuned" in text]
    assert mentions == ([line] if line else [])


def _evaluated(source: str) -> dict:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 80)
    logits = np.column_stack([-labels * 2.0, labels * 2.0]) + rng.normal(0, 1.5, (80, 2))
    metrics = evaluate_predictions(labels, logits, _spec(), list(range(80)), resamples=50)
    return {**metrics, "split": "test", "data": {"source": source}}


def test_the_card_opens_with_hub_metadata_the_hub_library_reads_back() -> None:
    from huggingface_hub import ModelCard

    metrics = _evaluated("/data/chest_xray")
    card = ModelCard(model_card(_spec(recipe="pneumonia"), metrics))
    data = card.data
    assert data.library_name == "medsight" and data.pipeline_tag == "image-classification"
    assert data.license == "cc-by-4.0"  # Kermany et al.'s CC BY 4.0 data
    assert data.datasets == ["kermany-pediatric-chest-xray-2018"]
    assert {"medsight", "medical-imaging", "binary", "malaria_lenet"} <= set(data.tags)
    results = {r.metric_type: r for r in data.eval_results}
    assert {"accuracy", "sensitivity", "specificity", "roc_auc"} <= set(results)
    auc = results["roc_auc"]
    figure = metrics["figures"]["roc_auc"]
    assert auc.metric_value == pytest.approx(figure["value"], abs=1e-4)
    assert auc.metric_args["ci_low"] == pytest.approx(figure["ci_low"], abs=1e-4)
    assert auc.metric_args["ci_high"] == pytest.approx(figure["ci_high"], abs=1e-4)
    assert auc.metric_args["ci_level"] == 0.95 and auc.dataset_split == "test"
    assert card.text.lstrip().startswith("# Model card: pneumonia")


def test_unknown_data_claims_no_licence_or_dataset() -> None:
    from huggingface_hub import ModelCard

    data = ModelCard(model_card(_spec(), _evaluated("/home/me/my_xrays"))).data
    assert data.license == "unknown" and data.datasets is None
    assert data.eval_results[0].dataset_type == "custom"
    no_figures = ModelCard(model_card(_spec(), {})).data
    assert no_figures.eval_results is None and no_figures.license == "unknown"


def _multilabel() -> dict:
    rng = np.random.default_rng(0)
    z = rng.normal(0, 1.5, (80, 2))
    targets = (rng.random(z.shape) < 1 / (1 + np.exp(-z))).astype(float)
    targets[::5, 1] = np.nan
    probs = 1 / (1 + np.exp(-z))
    metrics = multilabel_metrics(targets, probs, [0.4, 0.6], ["Effusion", "Nodule"], resamples=50)
    return {**metrics, "split": "test"}


def test_multilabel_card_has_a_per_label_table_with_intervals() -> None:
    metrics = _multilabel()
    # the card reads the task from the evaluation, whatever the spec says
    lines = _lines(model_card(_spec(class_names=["Effusion", "Nodule"]), metrics))
    assert (
        "Research on finding Effusion, Nodule in images, each finding decided on its own. Inputs "
        "should resemble the training data (same modality, view and preprocessing)."
    ) in lines
    assert any(
        line.startswith("- Multi-label: one calibrated probability per finding") for line in lines
    )
    assert not any(line.startswith(("- Threshold", "- Multi-class")) for line in lines)
    for key, label in MULTILABEL_ROWS:
        assert f"| {label} | {figure_text({**metrics['figures'][key]})} |" in lines
    assert not any(line.startswith(("| Accuracy |", "| Baseline")) for line in lines)
    start = lines.index("| " + " | ".join(PER_LABEL_HEADER) + " |")
    assert lines[start + 1] == "|---|---|---|---|---|---|---|---|"
    table = lines[start + 2 : start + 4]
    assert table == ["| " + " | ".join(row) + " |" for row in per_label_rows(metrics)]
    nodule = metrics["per_label"]["Nodule"]
    assert table[1].startswith(f"| Nodule | {nodule['n']} | {nodule['positives']} | 0.6000 | ")
    assert "(95 % CI " in table[1]


def test_multilabel_hub_metadata_has_each_labels_roc_auc() -> None:
    from huggingface_hub import ModelCard

    metrics = _multilabel()
    data = ModelCard(model_card(_spec(), metrics)).data
    results = {r.metric_name or r.metric_type: r for r in data.eval_results}
    assert {"macro_roc_auc", "micro_roc_auc", "ROC-AUC (Effusion)", "ROC-AUC (Nodule)"} <= set(
        results
    )
    figure = metrics["per_label"]["Nodule"]["roc_auc"]
    nodule = results["ROC-AUC (Nodule)"]
    assert nodule.metric_type == "roc_auc"
    assert nodule.metric_value == pytest.approx(figure["value"], abs=1e-4)
    assert nodule.metric_args["ci_low"] == pytest.approx(figure["ci_low"], abs=1e-4)
    assert data.metrics.count("roc_auc") == 1
