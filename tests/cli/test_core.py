"""The ``medsight`` command as a user types it (in-process, through ``cli.main``)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from medsight.cli import main, parse
from medsight.config import load_recipe, recipe_fields


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


@pytest.mark.parametrize(
    ("argv", "overrides"),
    [
        # the line from issue 17: an option between two overrides
        (
            ["--recipe", "malaria", "data.positive_class=X", "--epochs", "1", "data.limit=200"],
            ["data.positive_class=X", "data.limit=200"],
        ),
        (["data.limit=5", "--recipe", "malaria", "train.lr=1", "--seed", "2", "a.b=3"], None),
        (["--recipe", "malaria", "--epochs", "1", "train.lr=1", "train.lr=2"], None),
        (["--recipe", "malaria"], []),
    ],
)
def test_overrides_are_taken_anywhere_on_the_line(
    argv: list[str], overrides: list[str] | None
) -> None:
    args = parse(["train", *argv])
    expected = [t for t in argv if "=" in t] if overrides is None else overrides
    assert args.overrides == expected  # in the order given: the last of a key wins
    assert args.recipe == "malaria"


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--recipe", "malaria", "--lr", "3e-4"],  # an unknown option stays an error
        ["train", "--recipe", "malaria", "data.limit=5", "--epochs", "1", "--lrr=3"],
        ["evaluate", "b", "--data", "d", "--out", "o", "train.lr=1"],  # takes no overrides
    ],
)
def test_unknown_arguments_are_argparse_errors(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        parse(argv)
    assert caught.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("override", "hint"),
    [
        ("train.lrr=1", "did you mean train.lr?"),
        ("epochs=3", "did you mean train.epochs or preprocess.lung_crop.epochs or --epochs?"),
        ("seed=3", "did you mean train.seed or --seed?"),
    ],
)
def test_an_unknown_key_says_what_was_meant(
    override: str, hint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--recipe", "malaria-lenet", override, "--data", ".", "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert hint in err and len(err.strip().splitlines()) == 1


def test_resume_refuses_what_it_would_ignore(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--resume", str(tmp_path), "data.limit=50"]) == 2
    assert "data.limit=50 would be ignored" in capsys.readouterr().err


def test_recipes_show_prints_every_field_with_its_value(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["recipes", "show", "pneumonia"]) == 0
    lines = capsys.readouterr().out.splitlines()
    shown = dict(line.split(" = ", 1) for line in lines)
    recipe = load_recipe("pneumonia")
    assert shown["train.epochs"] == str(recipe.train.epochs)
    assert shown["data.image_size"] == "[224, 224]"
    assert shown["data.limit"] == "null"  # left at its default
    assert shown["train.seed"] == "42" and shown["preprocess.lung_crop.epochs"] == "20"
    assert shown["evaluate.threshold"] == "sensitivity>=0.95"
    assert set(shown) == set(recipe_fields())


def test_recipes_show_needs_a_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recipes", "show"]) == 2
    assert "recipes show needs a recipe name" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("recipe", "module", "extra"),
    [
        ("pneumonia", "segmentation_models_pytorch", "lungs"),
        ("pneumonia", "torchxrayvision", "lungs"),
    ],
)
def test_a_missing_extra_is_named_before_any_image_is_read(
    recipe: str,
    module: str,
    extra: str,
    chest_xray_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from medsight.training import prepare

    monkeypatch.setitem(sys.modules, module, None)  # as if it were not installed
    monkeypatch.setattr(prepare, "load_trainable", lambda *a: pytest.fail("data was read"))
    out = tmp_path / "run"
    argv = ["train", "--recipe", recipe, "--data", str(chest_xray_dir), "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"needs the '{extra}' extra ({module} is not installed)" in err
    assert f"pip install 'medsight[{extra}]'" in err
    assert not out.exists()


def test_the_covid_folder_given_to_a_class_folder_recipe(
    datasets_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--recipe", "malaria-lenet", "--data", str(datasets_dir / "covid")]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "metadata.csv" in err and "--recipe covid" in err and len(err.splitlines()) == 1
