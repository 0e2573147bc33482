"""ONNX export: parity with PyTorch on real X-rays, dynamic batch, TTA, loud failure on a
mismatch, static int8 quantisation, and the runner that serving and batch prediction use."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from medsight.bundle import (
    Bundle,
    BundleSpec,
    OnnxPredictor,
    PixelsToLogits,
    load_bundle,
    load_predictor,
    save_bundle,
)
from medsight.cli import main
from medsight.data.io import load_image
from medsight.errors import MedsightError
from medsight.models.zoo import create_model
from medsight.serving.export import export_onnx, int8_path


@pytest.fixture
def bundle_dir(xray_bundle: Path, tmp_path: Path) -> Path:
    """A private copy of the shared test bundle (export writes into the bundle folder)."""
    return Path(shutil.copytree(xray_bundle, tmp_path / "bundle"))


@pytest.fixture(scope="module")
def xrays(chest_xray_dir: Path) -> list[Path]:
    """16 real Kermany test images, 8 per class."""
    test = chest_xray_dir / "test"
    return [p for c in ("NORMAL", "PNEUMONIA") for p in sorted((test / c).glob("*.jpeg"))[:8]]


def _pixels(paths: list[Path], spec: BundleSpec) -> np.ndarray:
    return np.stack([load_image(p, tuple(spec.image_size), spec.channels) for p in paths])


def test_parity_on_real_xrays_and_dynamic_batch(bundle_dir: Path, xrays: list[Path]) -> None:
    path = export_onnx(bundle_dir, check_images=xrays)
    assert path == bundle_dir / "model.onnx"
    meta = json.loads((bundle_dir / "model.onnx.json").read_text())
    assert meta["parity"]["source"] == "real" and meta["parity"]["images"] == 16
    assert meta["parity"]["max_abs_logit_diff"] <= 1e-3 and meta["parity"]["decisions_differ"] == 0
    assert meta["bundle"]["threshold"] == 0.4 and meta["bundle"]["temperature"] == 1.5
    assert not [p for p in bundle_dir.iterdir() if p.name.endswith(".tmp")]

    bundle, runner = load_bundle(bundle_dir), load_predictor(bundle_dir)
    assert isinstance(runner, OnnxPredictor) and runner.spec == bundle.spec
    pixels = _pixels(xrays, bundle.spec)
    for batch in (pixels[:1], pixels[3:8]):  # batch 1 and 5 through the same graph
        np.testing.assert_allclose(runner.logits(batch), bundle.logits(batch), atol=1e-4)
        np.testing.assert_allclose(
            runner.predict_proba(batch), bundle.predict_proba(batch), atol=1e-5
        )
    uncalibrated = runner.predict_proba(pixels, calibrated=False)
    assert not np.allclose(uncalibrated, runner.predict_proba(pixels))  # temperature 1.5 applies
    assert isinstance(load_predictor(bundle_dir, prefer_onnx=False), Bundle)


def test_tta_and_normalisation_are_in_the_graph(tmp_path: Path) -> None:
    torch.manual_seed(1)
    spec = BundleSpec(
        model_name="kermany_cnn",
        class_names=["a", "b", "c"],
        image_size=(48, 40),
        channels=1,
        mean=(0.4,),
        std=(0.2,),
        tta=True,
    )
    folder = save_bundle(tmp_path / "tta", create_model("kermany_cnn", 3, 1, (48, 40)), spec)
    export_onnx(folder)  # no images given: a seeded synthetic batch
    meta = json.loads((folder / "model.onnx.json").read_text())
    assert meta["parity"]["source"] == "synthetic"
    bundle, runner = load_bundle(folder), OnnxPredictor(folder / "model.onnx")
    pixels = np.random.default_rng(5).integers(0, 256, (3, 48, 40, 1), dtype=np.uint8)
    np.testing.assert_allclose(runner.logits(pixels), bundle.logits(pixels), atol=1e-4)
    plain = bundle.model(bundle.to_input(pixels)).detach().numpy()
    assert np.abs(plain - runner.logits(pixels)).max() > 1e-3  # the mirror really counts


def test_histogram_equalisation_is_in_the_graph(tmp_path: Path, xrays: list[Path]) -> None:
    torch.manual_seed(2)
    spec = BundleSpec(
        model_name="kermany_cnn",
        class_names=["NORMAL", "PNEUMONIA"],
        image_size=(64, 64),
        channels=3,
        mean=(0.5,),
        std=(0.5,),
        exposure="equalize",
    )
    folder = save_bundle(tmp_path / "eq", create_model("kermany_cnn", 2, 3, (64, 64)), spec)
    export_onnx(folder, check_images=xrays)
    bundle, runner = load_bundle(folder), OnnxPredictor(folder / "model.onnx")
    pixels = _pixels(xrays, spec)
    dimmed = (pixels.astype(np.float32) * 0.6).astype(np.uint8)  # an under-exposed copy
    np.testing.assert_allclose(runner.logits(dimmed), bundle.logits(dimmed), atol=1e-4)
    # equalisation undoes the exposure change nearly exactly; without it the logits move
    assert np.abs(runner.logits(dimmed) - runner.logits(pixels)).max() < 0.05
    plain = Bundle(bundle.model, spec.model_copy(update={"exposure": "none"}))
    assert np.abs(plain.logits(dimmed) - plain.logits(pixels)).max() > 0.05


def test_a_planted_mismatch_fails_loudly(
    bundle_dir: Path, xrays: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    forward = PixelsToLogits.forward

    def skewed(self: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
        # only in the traced graph, not in PyTorch: pushes every exported answer to NORMAL
        skew = 3.0 if torch.compiler.is_exporting() else 0.0
        return forward(self, pixels) + torch.tensor([skew, 0.0])

    monkeypatch.setattr(PixelsToLogits, "forward", skewed)
    with pytest.raises(
        MedsightError, match=r"max \|logit difference\| 3 .* decisions and 0 domain checks differ"
    ):
        export_onnx(bundle_dir, check_images=xrays)
    assert sorted(p.name for p in bundle_dir.iterdir()) == ["bundle.json", "model.safetensors"]


def test_int8_is_static_and_calibrated_on_the_given_training_images(
    bundle_dir: Path, xrays: list[Path], chest_xray_dir: Path
) -> None:
    calibrate = [chest_xray_dir / "train" / "NORMAL"]
    export_onnx(bundle_dir, quantize=True, check_images=xrays, calibrate=calibrate)
    int8 = int8_path(bundle_dir / "model.onnx")
    assert int8 == bundle_dir / "model.int8.onnx" and int8.is_file()
    meta = json.loads((bundle_dir / "model.int8.onnx.json").read_text())
    report = meta["quantization"]
    assert report["type"].startswith("static int8 (QDQ") and report["images"] == 16
    assert report["calibration_images"] == 128 and set(report["roc_auc"]) == {
        "fp32",
        "int8",
        "change",
    }
    assert report["size_bytes"]["int8"] < report["size_bytes"]["fp32"]
    assert all("/train/NORMAL/" in p for p in meta["images"]["calibration"])
    pixels = _pixels(xrays, load_bundle(bundle_dir).spec)
    fp32, quantised = OnnxPredictor(bundle_dir / "model.onnx"), OnnxPredictor(int8)
    diff = np.abs(fp32.predict_proba(pixels) - quantised.predict_proba(pixels)).max()
    assert diff == pytest.approx(report["max_abs_probability_diff"], abs=1e-6) and diff < 0.1


def test_a_stale_export_is_not_used(bundle_dir: Path) -> None:
    export_onnx(bundle_dir)
    weights = load_file(str(bundle_dir / "model.safetensors"))
    save_file({k: v + 0.01 for k, v in weights.items()}, str(bundle_dir / "model.safetensors"))
    assert isinstance(load_predictor(bundle_dir), Bundle)


def test_a_timm_model_exports(tmp_path: Path) -> None:
    torch.manual_seed(0)
    spec = BundleSpec(
        model_name="resnet18",
        class_names=["NORMAL", "PNEUMONIA"],
        positive_class="PNEUMONIA",
        image_size=(64, 64),
        channels=3,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
    )
    folder = save_bundle(tmp_path / "r18", create_model("resnet18", 2, 3, (64, 64)), spec)
    path = export_onnx(folder, out=tmp_path / "exported" / "r18.onnx")
    assert json.loads((tmp_path / "exported" / "r18.onnx.json").read_text())["parity"]
    pixels = np.random.default_rng(2).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    np.testing.assert_allclose(
        OnnxPredictor(path).logits(pixels), load_bundle(folder).logits(pixels), atol=1e-4
    )


def test_cli_export(bundle_dir: Path, chest_xray_dir: Path, capsys) -> None:
    check = chest_xray_dir / "test" / "NORMAL"
    train = chest_xray_dir / "train" / "NORMAL"
    args = ["export", str(bundle_dir), "--check", str(check), "--quantize", "int8"]
    code = main([*args, "--calibrate", str(train)])
    out = capsys.readouterr().out
    assert code == 0 and '"source": "real"' in out and "int8 NOT adopted" in out
    assert (bundle_dir / "model.onnx").is_file() and (bundle_dir / "model.int8.onnx").is_file()
    assert main(["export", str(bundle_dir.parent / "missing")]) == 2
    assert "not a medsight bundle" in capsys.readouterr().err
    assert main(["export", str(bundle_dir), "--check", str(bundle_dir / "nope.png")]) == 2
    assert "nope.png: no such file or folder" in capsys.readouterr().err
