"""runtime.py's own functions: the sidecar name, file hashing, the ONNX runner's refusals, which
export counts as current (and why a stale one does not), and which engine load_predictor picks.
(Parity of the exported graph with PyTorch is in tests/serving/test_export.py.)"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from medsight.bundle import Bundle, OnnxPredictor, load_bundle, load_predictor, read_spec
from medsight.bundle.runtime import ONNX_NAME, current_export, sha256_file, sidecar
from medsight.errors import MedsightError
from medsight.serving.export import export_onnx


@pytest.fixture(scope="module")
def exported(xray_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the shared test bundle with a current ONNX export (exported once here)."""
    folder = Path(shutil.copytree(xray_bundle, tmp_path_factory.mktemp("runtime") / "bundle"))
    export_onnx(folder)
    return folder


@pytest.fixture
def bundle_copy(xray_bundle: Path, tmp_path: Path) -> Path:
    """A private copy of the shared bundle without export."""
    return Path(shutil.copytree(xray_bundle, tmp_path / "bundle"))


@pytest.fixture
def exported_copy(exported: Path, tmp_path: Path) -> Path:
    """A private copy of the exported bundle, free to be tampered with."""
    return Path(shutil.copytree(exported, tmp_path / "exported"))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("model.onnx", "model.onnx.json"),
        ("model.int8.onnx", "model.int8.onnx.json"),
        ("r18.onnx", "r18.onnx.json"),
    ],
)
def test_sidecar_appends_json_beside_the_graph(tmp_path: Path, name: str, expected: str) -> None:
    assert sidecar(tmp_path / "sub" / name) == tmp_path / "sub" / expected


@pytest.mark.parametrize("size", [0, 5, (1 << 20), (1 << 20) + 1, 2_500_000])
def test_sha256_file_equals_hashlib(tmp_path: Path, size: int) -> None:
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_sha256_file_changes_with_one_byte(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    path.write_bytes(b"\x00" * 3_000_000)
    before = sha256_file(path)
    path.write_bytes(b"\x00" * 2_999_999 + b"\x01")  # the change is in the last 1 MiB chunk
    assert sha256_file(path) != before


def test_onnx_predictor_without_a_graph_says_to_export(tmp_path: Path) -> None:
    with pytest.raises(MedsightError, match=r"model\.onnx\.json is missing.*medsight export"):
        OnnxPredictor(tmp_path / ONNX_NAME)


def test_onnx_predictor_without_its_description_says_to_export(exported_copy: Path) -> None:
    sidecar(exported_copy / ONNX_NAME).unlink()
    with pytest.raises(MedsightError, match=r"model\.onnx\.json is missing"):
        OnnxPredictor(exported_copy / ONNX_NAME)


def test_onnx_predictor_with_a_description_but_no_graph(exported_copy: Path) -> None:
    (exported_copy / ONNX_NAME).unlink()
    with pytest.raises(MedsightError, match="missing"):
        OnnxPredictor(exported_copy / ONNX_NAME)


def test_onnx_predictor_on_a_file_that_is_not_onnx(tmp_path: Path, xray_bundle: Path) -> None:
    path = tmp_path / ONNX_NAME
    path.write_bytes(b"this is not an ONNX graph")
    with pytest.raises(MedsightError, match="ONNX Runtime cannot load it"):
        OnnxPredictor(path, read_spec(xray_bundle))


def test_onnx_predictor_takes_its_spec_from_the_description(exported: Path) -> None:
    runner = OnnxPredictor(exported / ONNX_NAME)
    assert runner.engine == "onnxruntime" and runner.path == exported / ONNX_NAME
    assert runner.spec == read_spec(exported)
    assert runner.spec.threshold == 0.4 and runner.spec.temperature == 1.5
    pixels = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    whole = runner.logits(pixels)
    assert whole.shape == (5, 2)
    np.testing.assert_allclose(runner.logits(pixels, batch_size=2), whole, atol=1e-6)
    empty = runner.logits(pixels[:0])
    assert empty.shape == (0, 2)


def test_an_explicit_spec_wins_over_the_description(exported: Path) -> None:
    spec = read_spec(exported).model_copy(update={"temperature": 3.0})
    runner = OnnxPredictor(exported / ONNX_NAME, spec)
    assert runner.spec.temperature == 3.0


def test_no_export_is_not_current(bundle_copy: Path) -> None:
    assert current_export(bundle_copy) is None


def test_a_fresh_export_is_current(exported: Path) -> None:
    # `exported` is a copy of the test bundle just after export_onnx
    path = exported / ONNX_NAME
    assert current_export(exported) == path
    meta = json.loads(sidecar(path).read_text())
    assert meta["weights_sha256"] == sha256_file(exported / "model.safetensors")
    assert meta["onnx_sha256"] == sha256_file(path)


def test_rewritten_weights_make_the_export_stale(
    exported_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert current_export(exported_copy) == exported_copy / ONNX_NAME
    weights_file = exported_copy / "model.safetensors"
    weights = load_file(str(weights_file))
    save_file({k: v + 0.01 for k, v in weights.items()}, str(weights_file))
    with caplog.at_level(logging.WARNING, logger="medsight.bundle.runtime"):
        assert current_export(exported_copy) is None
    assert "exported from other weights" in caplog.text
    assert isinstance(load_predictor(exported_copy), Bundle)


def test_a_changed_graph_is_not_current(
    exported_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with open(exported_copy / ONNX_NAME, "ab") as handle:
        handle.write(b"\x00")
    with caplog.at_level(logging.WARNING, logger="medsight.bundle.runtime"):
        assert current_export(exported_copy) is None
    assert "changed since export" in caplog.text
    assert isinstance(load_predictor(exported_copy), Bundle)


@pytest.mark.parametrize("removed", ["model.onnx.json", "model.safetensors"])
def test_a_missing_file_means_no_current_export(exported_copy: Path, removed: str) -> None:
    (exported_copy / removed).unlink()
    assert current_export(exported_copy) is None


def test_load_predictor_prefers_a_current_export(exported: Path) -> None:
    runner = load_predictor(exported)
    assert isinstance(runner, OnnxPredictor) and runner.path == exported / ONNX_NAME
    torch_runner = load_predictor(exported, prefer_onnx=False)
    assert isinstance(torch_runner, Bundle) and torch_runner.spec == runner.spec


def test_load_predictor_without_export_is_the_torch_bundle(bundle_copy: Path) -> None:
    runner = load_predictor(bundle_copy)
    assert isinstance(runner, Bundle)
    assert runner.spec == load_bundle(bundle_copy).spec


def test_load_predictor_accepts_the_run_directory(exported: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(exported, run_dir / "bundle")
    runner = load_predictor(run_dir)
    assert isinstance(runner, OnnxPredictor) and runner.path == run_dir / "bundle" / ONNX_NAME
    assert isinstance(load_predictor(run_dir, prefer_onnx=False), Bundle)


def test_load_predictor_on_a_folder_that_is_no_bundle(tmp_path: Path) -> None:
    with pytest.raises(MedsightError, match="not a medsight bundle"):
        load_predictor(tmp_path)
