"""Static int8 behind the accuracy gate: QDQ graph, calibration on the train split only, the gate
adopting or refusing with its figures, and predict / serve / load choosing int8 only when it is
adopted and current (fp32 when asked)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load_file, save_file

import medsight
from medsight.bundle import OnnxPredictor, load_bundle, load_predictor, save_bundle
from medsight.cli import main
from medsight.data.io import content_sha256, load_image
from medsight.errors import MedsightError
from medsight.evaluation.card import model_card
from medsight.serving.app import create_app
from medsight.serving.export import Gate, export_onnx, int8_path
from medsight.serving.quantize import gate_images

PROBABILITY_TOLERANCE = 0.05  # int8 vs fp32, per class probability, on real X-rays


def _files(root: Path, split: str, n: int) -> list[Path]:
    return [p for c in ("NORMAL", "PNEUMONIA") for p in sorted((root / split / c).glob("*"))[:n]]


def _make_run(root: Path, bundle: Path, chest_xray_dir: Path) -> Path:
    """A run directory as training leaves it: ``bundle/`` (with its card) and ``splits.csv``
    of real X-rays (train from Kermany train, val and test from Kermany test)."""
    run = root / "run"
    shutil.copytree(bundle, run / "bundle")
    spec = load_bundle(run / "bundle").spec
    (run / "bundle" / "model_card.md").write_text(model_card(spec, {}))
    held_out = _files(chest_xray_dir, "test", 60)
    splits = {
        "train": _files(chest_xray_dir, "train", 24),
        "val": held_out[::3],
        "test": [f for i, f in enumerate(held_out) if i % 3],
    }
    frame = pd.DataFrame(
        [
            {"path": str(f), "label": f.parent.name, "split": k}
            for k, fs in splits.items()
            for f in fs
        ]
    )
    frame["patient"], frame["patient_source"] = "", "none"
    frame["sha256"] = [content_sha256(p) for p in frame["path"]]
    frame.to_csv(run / "splits.csv", index=False)
    return run


@pytest.fixture(scope="module")
def trained_bundle(
    xray_bundle: Path, chest_xray_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The test bundle trained a little on 48 real X-rays: an untrained model's probabilities
    crowd the threshold, where any rounding flips decisions (the gate then rightly refuses)."""
    bundle = load_bundle(xray_bundle)
    files = _files(chest_xray_dir, "train", 24)
    size = tuple(bundle.spec.image_size)
    x = bundle.to_input(np.stack([load_image(f, size, bundle.spec.channels) for f in files]))
    y = torch.tensor([f.parent.name == "PNEUMONIA" for f in files]).long()
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(bundle.model.parameters(), 1e-3)
    bundle.model.train()
    for _ in range(40):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(bundle.model(x), y).backward()
        optimizer.step()
    folder = tmp_path_factory.mktemp("trained") / "xray"
    return save_bundle(folder, bundle.model.eval(), bundle.spec)


@pytest.fixture(scope="module")
def exported_run(
    trained_bundle: Path, chest_xray_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    run = _make_run(tmp_path_factory.mktemp("int8"), trained_bundle, chest_xray_dir)
    export_onnx(run, gate=ANY_SPEED)  # this tiny CNN runs no faster in int8: see the speed test
    return run


@pytest.fixture
def run_copy(exported_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(exported_run, tmp_path / "run"))


ANY_SPEED = Gate(min_speedup=0.0)


def _record(bundle: Path) -> dict:
    return json.loads((int8_path(bundle / "model.onnx").with_suffix(".onnx.json")).read_text())


def test_int8_is_qdq_gated_on_held_out_images_and_recorded(exported_run: Path) -> None:
    bundle = exported_run / "bundle"
    graph = onnx.load(bundle / "model.int8.onnx")
    ops = {node.op_type for node in graph.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # 7-bit weights: no saturation on x86 CPUs without VNNI, wherever the model is served
    weights = [
        onnx.numpy_helper.to_array(t)
        for t in graph.graph.initializer
        if t.data_type == onnx.TensorProto.INT8
    ]
    assert weights and all(-64 <= w.min() and w.max() <= 64 for w in weights)
    assert any(np.abs(w).max() >= 60 for w in weights)  # the range is used, not wasted
    meta = _record(bundle)
    record = meta["quantization"]
    assert record["adopted"] is True, record["reason"]
    assert record["agreement"] >= 0.99 and record["roc_auc"]["change"] <= 0.005
    speed = record["speed"]
    assert speed["fp32_images_per_s"] > 0 and speed["int8_images_per_s"] > 0
    assert record["calibration_images"] == 48 and record["images"] == len(meta["images"]["gate"])
    assert (
        "val and test splits" in record["source"] and "train split" in record["calibration_source"]
    )
    # the bundle and its card say the same
    assert json.loads((bundle / "bundle.json").read_text())["metrics"]["int8"] == record
    card = (bundle / "model_card.md").read_text().split("## Data")[0]
    assert "- int8 (ONNX Runtime): adopted" in card.split("## Model")[1]


def test_calibration_and_gate_images_never_overlap(
    exported_run: Path, chest_xray_dir: Path
) -> None:
    files = _record(exported_run / "bundle")["images"]
    calibration, gate = set(files["calibration"]), set(files["gate"])
    assert calibration and gate and not calibration & gate
    splits = pd.read_csv(exported_run / "splits.csv").set_index("path")["split"]
    assert set(splits[list(calibration)]) == {"train"}
    assert set(splits[list(gate)]) <= {"val", "test"}
    # a held-out image whose bytes were calibrated on is left out of the gate
    spec = load_bundle(exported_run / "bundle").spec
    check = _files(chest_xray_dir, "test", 3)
    images, _ = gate_images(exported_run / "bundle", spec, check, {content_sha256(check[0])})
    assert images is not None and len(images.paths) == 5 and str(check[0]) not in images.paths


def test_int8_probabilities_agree_with_fp32_on_real_xrays(
    exported_run: Path, chest_xray_dir: Path
) -> None:
    bundle = exported_run / "bundle"
    spec = load_bundle(bundle).spec
    files = _files(chest_xray_dir, "test", 20)
    pixels = np.stack([load_image(f, tuple(spec.image_size), spec.channels) for f in files])
    fp32, int8 = OnnxPredictor(bundle / "model.onnx"), OnnxPredictor(bundle / "model.int8.onnx")
    p32, p8 = fp32.predict_proba(pixels), int8.predict_proba(pixels)
    assert np.abs(p32 - p8).max() <= PROBABILITY_TOLERANCE
    assert not np.array_equal(p32, p8)  # it really is another model


def test_predict_serve_and_load_pick_int8_only_when_adopted(
    exported_run: Path, chest_xray_dir: Path, tmp_path: Path
) -> None:
    bundle = exported_run / "bundle"
    assert load_predictor(bundle).engine == "onnxruntime-int8"
    assert load_predictor(bundle, precision="int8").engine == "onnxruntime-int8"
    assert load_predictor(bundle, precision="fp32").engine == "onnxruntime"
    assert medsight.load(exported_run).engine == "onnxruntime-int8"
    assert medsight.load(exported_run, precision="fp32").engine == "onnxruntime"
    for precision, engine in ((None, "onnxruntime-int8"), ("fp32", "onnxruntime")):
        with TestClient(create_app(exported_run, precision=precision)) as client:
            assert client.get("/v1/model").json()["serving"]["engine"] == engine
    images = chest_xray_dir / "test" / "NORMAL"
    out = tmp_path / "p.csv"
    done = medsight.predict(exported_run, [sorted(images.iterdir())[0]], out, precision="fp32")
    assert done.engine == "onnxruntime"
    done = medsight.predict(exported_run, [sorted(images.iterdir())[1]], out)
    assert done.engine == "onnxruntime-int8"
    with pytest.raises(MedsightError, match="int8 runs on ONNX Runtime"):
        load_predictor(bundle, prefer_onnx=False, precision="int8")


def test_a_stricter_gate_refuses_with_the_figures(
    run_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export_onnx(run_copy, gate=Gate(min_agreement=1.01, max_auc_change=-1.0, min_speedup=100.0))
    bundle = run_copy / "bundle"
    record = _record(bundle)["quantization"]
    assert record["adopted"] is False and (bundle / "model.int8.onnx").is_file()
    assert "decisions agree on" in record["reason"] and "ROC-AUC changes by" in record["reason"]
    assert "fp32's speed here (needs 100.0x)" in record["reason"]  # slower int8 is not adopted
    assert record["images"] > 0 and record["roc_auc"]["fp32"] is not None
    assert "not adopted" in (bundle / "model_card.md").read_text()
    assert load_predictor(bundle).engine == "onnxruntime"
    with pytest.raises(MedsightError, match="was not adopted: decisions agree on"):
        load_predictor(bundle, precision="int8")
    args = [
        "predict",
        str(run_copy),
        str(run_copy / "splits.csv"),
        "--out",
        str(tmp_path / "x.csv"),
    ]
    assert main([*args, "--precision", "int8"]) == 2
    assert "not adopted" in capsys.readouterr().err


def test_a_changed_or_stale_int8_model_is_passed_over(run_copy: Path) -> None:
    bundle = run_copy / "bundle"
    int8 = bundle / "model.int8.onnx"
    int8.write_bytes(int8.read_bytes() + b"\0")  # a planted, different model
    assert load_predictor(bundle).engine == "onnxruntime"
    with pytest.raises(MedsightError, match="changed since export"):
        load_predictor(bundle, precision="int8")
    weights = load_file(str(bundle / "model.safetensors"))
    save_file({k: v + 0.01 for k, v in weights.items()}, str(bundle / "model.safetensors"))
    assert load_predictor(bundle).engine == "torch"  # neither export is current


def test_without_labelled_held_out_images_int8_is_written_not_adopted(
    xray_bundle: Path, chest_xray_dir: Path, tmp_path: Path
) -> None:
    bundle = Path(shutil.copytree(xray_bundle, tmp_path / "bundle"))
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    for f in _files(chest_xray_dir, "test", 2):
        shutil.copy(f, unlabelled / f.name)
    calibrate = [chest_xray_dir / "train" / "NORMAL"]
    export_onnx(bundle, check_images=[unlabelled], calibrate=calibrate)
    record = _record(bundle)["quantization"]
    assert record["adopted"] is False and "no labelled held-out images" in record["reason"]
    assert (bundle / "model.int8.onnx").is_file() and load_predictor(bundle).engine == "onnxruntime"
    with pytest.raises(MedsightError, match="cannot quantise to int8: no training-split images"):
        export_onnx(Path(shutil.copytree(xray_bundle, tmp_path / "b2")), quantize=True)
