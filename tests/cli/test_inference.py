"""``medsight predict``, ``export`` and ``serve`` as a user types them."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from medsight.cli import main


@pytest.fixture
def bundle(xray_bundle: Path, tmp_path: Path) -> Path:
    """A private copy: export writes into the bundle (and predict would then use ONNX)."""
    return Path(shutil.copytree(xray_bundle, tmp_path / "bundle"))


@pytest.fixture
def images(chest_xray_dir: Path, tmp_path: Path) -> Path:
    """4 + 4 real Kermany test X-rays, a broken file and a text file (not an image)."""
    root = tmp_path / "images"
    for cls in ("NORMAL", "PNEUMONIA"):
        (root / cls).mkdir(parents=True)
        for file in sorted((chest_xray_dir / "test" / cls).glob("*.jpeg"))[::13][:4]:
            shutil.copy(file, root / cls / file.name)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "readme.txt").write_text("ignored")
    return root


def test_predict_then_a_rerun_that_has_nothing_left(
    bundle: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out" / "predictions.csv"
    args = ["predict", str(bundle), str(images), "--out", str(out), "--batch-size", "3"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        f"{out}: 8 new, 0 already there, 1 unreadable, of 9 files (torch)"
    ]
    assert f"skipped {images / 'broken.png'}: " in captured.err
    frame = pd.read_csv(out)
    assert len(frame) == 8 and frame["path"].is_unique
    assert list(frame.columns) == [
        "path",
        "probability",
        "prediction",
        "p_NORMAL",
        "p_PNEUMONIA",
        "in_domain",
        "domain_score",
    ]
    assert "no domain check" in captured.err  # the test bundle predates domain guards

    before = out.read_bytes()
    assert main(args) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        f"{out}: 0 new, 8 already there, 1 unreadable, of 9 files (torch)"
    ]
    assert out.read_bytes() == before


def test_predict_takes_single_files_and_adds_new_ones(
    bundle: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p.csv"
    first = sorted((images / "NORMAL").iterdir())[0]
    assert main(["predict", str(bundle), str(first), "--out", str(out)]) == 0
    assert (
        capsys.readouterr()
        .out.strip()
        .endswith("1 new, 0 already there, 0 unreadable, of 1 files (torch)")
    )
    assert main(["predict", str(bundle), str(images / "NORMAL"), "--out", str(out)]) == 0
    assert (
        capsys.readouterr()
        .out.strip()
        .endswith("3 new, 1 already there, 0 unreadable, of 4 files (torch)")
    )
    assert len(pd.read_csv(out)) == 4


def test_predict_shards_split_the_files(
    bundle: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    counts = []
    for i in range(2):
        args = ["predict", str(bundle), str(images), "--out", str(tmp_path / f"{i}.csv")]
        assert main([*args, "--shard", f"{i}/2", "--no-onnx"]) == 0
        line = capsys.readouterr().out.strip()
        match = re.search(
            r": (\d+) new, 0 already there, (\d) unreadable, of (\d+) files \(torch\)$", line
        )
        assert match, line
        counts.append(int(match[3]))
    assert sum(counts) == 9


def test_export_prints_the_parity_json(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(bundle)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    prefix = f"{bundle / 'model.onnx'}: parity with PyTorch "
    assert lines[0].startswith(prefix)
    parity = json.loads(lines[0][len(prefix) :])
    assert parity["source"] == "synthetic" and parity["decisions_differ"] == 0
    assert parity["images"] > 0 and parity["max_abs_logit_diff"] <= 1e-3
    meta = json.loads((bundle / "model.onnx.json").read_text())
    assert meta["parity"] == parity
    assert not (bundle / "model.int8.onnx").exists()


def test_export_to_another_file_with_int8(
    bundle: Path, images: Path, chest_xray_dir: Path, tmp_path: Path, capsys
) -> None:
    target = tmp_path / "exported" / "xray.onnx"
    code = main(
        [
            "export",
            str(bundle),
            "--out",
            str(target),
            "--quantize",
            "int8",
            "--check",
            str(images / "NORMAL"),
            str(images / "PNEUMONIA"),
            "--calibrate",
            str(chest_xray_dir / "train" / "PNEUMONIA"),
        ]
    )
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    parity = json.loads(lines[0].removeprefix(f"{target}: parity with PyTorch "))
    assert parity["source"] == "real" and parity["images"] == 8
    int8 = tmp_path / "exported" / "xray.int8.onnx"
    verdict, _, figures = lines[1].partition("; ")
    assert verdict.startswith(f"{int8}: int8 ")
    quantization = json.loads(figures)
    assert (
        quantization
        == json.loads((int8.with_name(int8.name + ".json")).read_text())["quantization"]
    )
    assert quantization["reason"] in verdict
    assert quantization["type"].startswith("static int8") and quantization["images"] == 8
    assert 0 <= quantization["agreement"] <= 1 and quantization["calibration_images"] == 128
    assert quantization["size_bytes"]["int8"] < quantization["size_bytes"]["fp32"]
    assert not (bundle / "model.onnx").exists()  # --out: the bundle itself is left alone
    assert "int8" not in json.loads((bundle / "bundle.json").read_text())["metrics"]


def test_int8_without_training_images_is_one_error_line(bundle: Path, capsys) -> None:
    assert main(["export", str(bundle), "--quantize", "int8"]) == 2
    assert "no training-split images to calibrate on" in capsys.readouterr().err
    assert not (bundle / "model.int8.onnx").exists()


def test_export_format_is_onnx_or_triton(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["export", str(bundle), "--format", "tflite"])
    assert exited.value.code == 2
    assert "invalid choice: 'tflite'" in capsys.readouterr().err
    assert not (bundle / "model.onnx").exists()


def test_quantize_accepts_only_int8(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["export", str(bundle), "--quantize", "fp16"])
    assert exited.value.code == 2
    assert "invalid choice: 'fp16'" in capsys.readouterr().err


def test_serve_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for option in ("--host", "--port", "--api-key", "--no-onnx", "MEDSIGHT_API_KEY"):
        assert option in text, option


def test_serve_needs_a_bundle(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve"])
    assert exited.value.code == 2
    assert "bundle" in capsys.readouterr().err


def test_serve_of_a_missing_bundle_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", str(tmp_path / "missing"), "--port", "0"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "not a medsight bundle" in lines[0]
