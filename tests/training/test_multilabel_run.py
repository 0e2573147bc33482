"""A multi-label run end to end on the real ieee8023 sheet (covid-findings, small and quick):
per-label figures, the bundle's own thresholds, and every command downstream of training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import medsight
from medsight import api
from medsight.data.multilabel import label_column
from medsight.errors import MedsightError

QUICK = [
    "train.num_workers=0",
    "train.batch_size=16",
    "data.image_size=[64, 64]",
    "model.name=malaria_lenet",
    "model.pretrained=null",
    "train.freeze_epochs=0",
]


@pytest.fixture(scope="module")
def run(datasets_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    covid = datasets_dir / "covid"
    if not (covid / "metadata.csv").is_file():
        pytest.skip(f"ieee8023 collection not found at {covid}")
    out = tmp_path_factory.mktemp("multilabel") / "run"
    return Path(api.train("covid-findings", covid, out, epochs=2, overrides=QUICK))


def test_metrics_hold_every_label_with_intervals_on_recorded_images(run: Path) -> None:
    metrics = json.loads((run / "metrics.json").read_text())
    splits = pd.read_csv(run / "splits.csv", dtype=str, keep_default_na=False)
    test = splits[splits["split"] == "test"]
    names = json.loads((run / "bundle" / "bundle.json").read_text())["class_names"]
    assert metrics["task"] == "multilabel" and set(metrics["per_label"]) == set(names)
    for name in names:
        figures = metrics["per_label"][name]
        recorded = (test[label_column(name)] != "").sum()
        assert figures["n"] == recorded  # a missing label is not a negative
        assert figures["positives"] == (test[label_column(name)] == "1").sum()
        auc = figures["roc_auc"]
        if figures["positives"] and figures["negatives"]:
            assert 0 <= auc["ci_low"] <= auc["value"] <= auc["ci_high"] <= 1
    # the outcome labels are recorded for far fewer images than the findings
    assert metrics["per_label"]["intubated"]["n"] < metrics["per_label"]["COVID-19"]["n"]
    macro = np.mean(
        [f["roc_auc"]["value"] for f in metrics["per_label"].values() if f["roc_auc"]["value"]]
    )
    assert metrics["macro_roc_auc"] == pytest.approx(macro)
    assert (run / "plots" / "roc_per_label.png").is_file()


def test_the_bundle_keeps_a_threshold_and_temperature_per_label(run: Path) -> None:
    spec = json.loads((run / "bundle" / "bundle.json").read_text())
    n = len(spec["class_names"])
    assert spec["multi_label"]["labels"] == spec["class_names"]
    assert len(spec["label_thresholds"]) == len(spec["label_temperatures"]) == n
    assert len(set(spec["label_thresholds"])) > 1  # chosen label by label on val


def test_predictions_have_a_probability_and_the_truth_per_label(run: Path) -> None:
    rows = pd.read_csv(run / "predictions.csv", dtype=str, keep_default_na=False)
    spec = medsight.load(run / "bundle").spec
    for name in spec.class_names:
        assert f"p_{name}" in rows and label_column(name) in rows
    probs = rows[[f"p_{n}" for n in spec.class_names]].to_numpy(float)
    assert list(rows["prediction"]) == spec.decision_names(probs)


def test_evaluate_on_the_runs_own_test_split_agrees_with_the_run(run: Path, tmp_path) -> None:
    evaluation = api.evaluate(run / "bundle", run / "splits.csv", tmp_path / "eval", split="test")
    trained = json.loads((run / "metrics.json").read_text())
    assert evaluation["n"] == trained["n"]
    for name, figures in trained["per_label"].items():
        assert evaluation["per_label"][name]["roc_auc"]["value"] == pytest.approx(
            figures["roc_auc"]["value"], abs=1e-6
        )
    assert (tmp_path / "eval" / "report.html").is_file()
    figure = evaluation.figures["went_icu_roc_auc"]  # every label's figures, typed
    assert figure.value == evaluation["per_label"]["went_icu"]["roc_auc"]["value"]


def test_the_python_predictor_answers_every_label(run: Path) -> None:
    image = pd.read_csv(run / "predictions.csv")["path"].iloc[0]
    classifier = medsight.load(run / "bundle", prefer_onnx=False)
    answer = classifier.predict(image)
    names = classifier.class_names
    assert list(answer.probabilities) == names and set(answer.thresholds) == set(names)
    expected = [n for n in names if answer.probabilities[n] >= answer.thresholds[n]]
    assert answer.findings == expected
    assert answer.decision == ("|".join(expected) or "No Finding")
    heat = classifier.explain(image, target="intubated")
    assert heat.target_class == "intubated" and heat.heatmap.shape == (64, 64)


def test_batch_predict_writes_every_label(run: Path, tmp_path: Path) -> None:
    images = list(pd.read_csv(run / "predictions.csv")["path"].iloc[:5])
    result = api.predict(run / "bundle", images, tmp_path / "out.csv", onnx=False)
    rows = pd.read_csv(tmp_path / "out.csv")
    assert result.predicted == 5
    assert [c for c in rows if c.startswith("p_")] == [
        f"p_{n}" for n in medsight.load(run / "bundle").class_names
    ]


def test_single_label_commands_refuse_it(run: Path, tmp_path: Path) -> None:
    with pytest.raises(MedsightError, match="multi-label model"):
        api.compare(run / "bundle", run / "bundle", run / "splits.csv", split="test")
    with pytest.raises(MedsightError, match="multi-label model"):
        api.audit(run / "bundle", [run / "splits.csv"], tmp_path / "audit", split="test")


def test_the_rest_api_answers_every_label(run: Path) -> None:
    from fastapi.testclient import TestClient

    from medsight.serving.app import create_app

    image = Path(pd.read_csv(run / "predictions.csv")["path"].iloc[0])
    expected = medsight.load(run / "bundle", prefer_onnx=False).predict(image)
    with TestClient(create_app(run / "bundle")) as client:
        files = {"file": (image.name, image.read_bytes(), "application/octet-stream")}
        body = client.post("/v1/predict", files=files)
        assert body.status_code == 200, body.text
        answer = body.json()
        explained = client.post("/v1/explain", files=files, data={"target": "went_icu"})
    assert set(answer["probabilities"]) == set(expected.probabilities)
    for name, p in expected.probabilities.items():
        assert answer["probabilities"][name] == pytest.approx(p, abs=1e-4)
    assert answer["findings"] == expected.findings and answer["thresholds"] == expected.thresholds
    assert explained.status_code == 200 and explained.json()["target_class"] == "went_icu"


def test_onnx_and_triton_exports_carry_the_labels_own_values(run: Path, tmp_path: Path) -> None:
    import shutil

    bundle = shutil.copytree(run / "bundle", tmp_path / "bundle")
    spec = medsight.load(bundle, prefer_onnx=False).spec
    triton = tmp_path / "triton"
    api.export(bundle, out=triton, format="triton", name="findings")
    config = (triton / "findings" / "config.pbtxt").read_text()
    assert "medsight_label_thresholds" in config and "medsight_temperature" not in config
    assert ",".join(map(str, spec.label_thresholds)) in config
    # the ONNX graph's logits through the bundle's own rule: the PyTorch answers
    api.export(bundle)
    onnx = medsight.load(bundle)
    torch = medsight.load(bundle, prefer_onnx=False)
    image = pd.read_csv(run / "predictions.csv")["path"].iloc[1]
    assert onnx.engine != torch.engine
    a, b = onnx.predict(image), torch.predict(image)
    assert a.findings == b.findings
    assert np.allclose(list(a.probabilities.values()), list(b.probabilities.values()), atol=1e-4)


def test_the_cli_prints_each_labels_figure(run: Path, tmp_path: Path, capsys) -> None:
    from medsight.cli import main

    args = ["evaluate", str(run / "bundle"), "--data", str(run / "splits.csv"), "--split", "test"]
    assert main([*args, "--out", str(tmp_path / "eval")]) == 0
    printed = capsys.readouterr().out
    assert "macro_roc_auc" in printed and "went_icu ROC-AUC" in printed
    assert "images, " in printed.split("went_icu ROC-AUC")[1].splitlines()[0]
