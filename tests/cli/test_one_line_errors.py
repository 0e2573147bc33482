"""User errors at the command line: one line naming the file and the problem, exit 2."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest

from medsight.cli import main


@pytest.fixture
def bundle(xray_bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(xray_bundle, tmp_path / "bundle"))


@pytest.fixture
def xray(chest_xray_dir: Path) -> Path:
    return sorted((chest_xray_dir / "test" / "NORMAL").glob("*.jpeg"))[0]


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize(
    "content",
    [b"not safetensors at all", pickle.dumps({"weight": [1.0, 2.0]}), b""],
    ids=["garbage", "pickle", "empty"],
)
@pytest.mark.parametrize("command", ["predict", "export", "explain"])
def test_a_damaged_weights_file_is_one_line(
    bundle: Path, xray: Path, tmp_path: Path, capsys, content: bytes, command: str
) -> None:
    (bundle / "model.safetensors").write_bytes(content)
    argv = {
        "predict": ["predict", str(bundle), str(xray), "--out", str(tmp_path / "p.csv")],
        "export": ["export", str(bundle)],
        "explain": ["explain", str(bundle), str(xray), "--out", str(tmp_path / "x")],
    }[command]
    assert main(argv) == 2
    line = _one_line(capsys)
    assert line.startswith(f"error: {bundle / 'model.safetensors'}: not a readable safetensors")


def test_weights_of_another_model_are_one_line(bundle: Path, capsys) -> None:
    import torch
    from safetensors.torch import save_file

    save_file({"conv.weight": torch.zeros(3, 3)}, str(bundle / "model.safetensors"))
    assert main(["export", str(bundle)]) == 2
    assert "the weights do not fit the model bundle.json describes" in _one_line(capsys)


def test_a_bundle_description_with_wrong_types_is_one_line(bundle: Path, capsys) -> None:
    spec = json.loads((bundle / "bundle.json").read_text())
    spec["image_size"], spec["threshold"] = "big", [0.5]
    (bundle / "bundle.json").write_text(json.dumps(spec))
    assert main(["export", str(bundle)]) == 2
    line = _one_line(capsys)
    assert "invalid bundle description" in line
    assert "image_size" in line and "threshold" in line
    (bundle / "bundle.json").write_text("{not json")
    assert main(["export", str(bundle)]) == 2
    assert "invalid bundle description" in _one_line(capsys)


def test_serve_refuses_a_port_out_of_range(bundle: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", str(bundle), "--port", "99999"])
    assert exited.value.code == 2
    assert "'99999' is not a port number (0-65535" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--request-timeout", "0"),
        ("--request-timeout", "nan"),
        ("--max-pixels", "-1"),
        ("--max-decoded-mb", "lots"),
        ("--max-decodes", "0"),
    ],
)
def test_serve_refuses_limits_that_are_not_positive(bundle: Path, capsys, option, value) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", str(bundle), option, value])
    assert exited.value.code == 2
    assert f"{value!r} is not a positive" in capsys.readouterr().err


def test_out_that_is_a_file_or_a_folder_is_one_line(
    bundle: Path, xray: Path, tmp_path: Path, capsys
) -> None:
    file = tmp_path / "notes.txt"
    file.write_text("mine")
    argv = ["train", "--recipe", "malaria-lenet", "--data", str(tmp_path), "--out", str(file)]
    assert main(argv) == 2
    assert (
        _one_line(capsys)
        == f"error: {file} is a file; --out names the folder the run is written to"
    )
    assert file.read_text() == "mine"
    assert main(["predict", str(bundle), str(xray), "--out", str(tmp_path)]) == 2
    assert _one_line(capsys) == f"error: {tmp_path} is a folder; --out names the CSV file to write"
    under_a_file = file / "p.csv"
    assert main(["predict", str(bundle), str(xray), "--out", str(under_a_file)]) == 2
    assert str(file) in _one_line(capsys)  # any other path problem: one line too
    assert file.read_text() == "mine"
