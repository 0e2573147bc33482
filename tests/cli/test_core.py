"""The ``medsight`` command as a user types it (in-process, through ``cli.main``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from medsight.cli import main


def test_recipes_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recipes", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("malaria-lenet ") and "Tutorial (a)" in line for line in lines)


def test_models_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list"]) == 0
    assert "malaria_lenet" in capsys.readouterr().out


def test_inspect_full_malaria(malaria_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "inspect", str(malaria_dir), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["n_images"] == 8000 and found["n_patients"] == 180
    assert found["splits"] == [
        {"split": "(none)", "counts": [4000, 4000], "total": 8000, "patients": 180}
    ]
    assert found["class_names"] == ["Parasitized", "Uninfected"]
    assert found["duplicates"] == [] and found["unreadable"] == []
    assert found["modes"] == {"RGB": 8000}


def test_inspect_reports_duplicates_and_unreadable_files(
    malaria_subset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "data"
    shutil.copytree(malaria_subset, root)
    original = sorted((root / "Uninfected").glob("*.png"))[0]
    shutil.copy(original, root / "Uninfected" / "again.png")
    (root / "Parasitized" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert main(["data", "inspect", str(root)]) == 0
    text = capsys.readouterr().out
    assert "images: 602" in text
    assert "exact duplicates: 1 group(s)" in text and "again.png" in text
    assert "unreadable files: 1" in text and "broken.png" in text
    assert "Parasitized" in text and "Uninfected" in text


def test_train_from_the_command_line(
    malaria_subset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--recipe",
            "malaria-lenet",
            "--data",
            str(malaria_subset),
            "--out",
            str(out),
            "--epochs",
            "1",
            "--seed",
            "7",
            "data.limit=120",
            "data.image_size=[32,32]",
            "train.num_workers=0",
        ]
    )
    assert code == 0
    assert "run written to" in capsys.readouterr().out
    config = (out / "config.yaml").read_text()
    assert "epochs: 1" in config and "seed: 7" in config and "limit: 120" in config
    assert sum(1 for _ in open(out / "splits.csv")) == 121


@pytest.mark.parametrize(
    ("flags", "line"),
    [
        ([], "patient ids: 0 of 60 images; a training would split by image for 60 of 60 images"),
        (["--patient-pattern", r"img_(\d+)"], "patient ids: 60 of 60 images (data.patient_pattern"),
    ],
)
def test_inspect_tells_how_many_images_have_a_patient_id(
    malaria_renamed: Path, flags: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "inspect", str(malaria_renamed), *flags]) == 0
    assert line in capsys.readouterr().out


def test_require_patients_refuses_renamed_cells_in_one_line(
    malaria_renamed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--recipe", "malaria-lenet", "--data", str(malaria_renamed)]
    argv += ["--out", str(tmp_path / "run"), "data.require_patients=true"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "60 of 60 images have no patient id (e.g. " in err and "img_" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["data", "inspect", "/no/such/folder"], "/no/such/folder: no such file or folder"),
        (["train", "--recipe", "nope", "--data", ".", "--out", "x"], "unknown recipe 'nope'"),
        (["evaluate", "/no/bundle", "--data", ".", "--out", "x"], "not a medsight bundle"),
    ],
)
def test_errors_are_one_clear_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_api_functions_survive_importing_every_subpackage() -> None:
    import importlib

    import medsight

    for package in ("data", "models", "training", "evaluation", "explanation", "serving"):
        importlib.import_module(f"medsight.{package}")
    for name in medsight.__all__:
        if name != "__version__":
            assert callable(getattr(medsight, name)), name
