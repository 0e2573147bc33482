"""The error classes: messages a user can act on, one hierarchy the CLI turns into one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from medsight import errors
from medsight.cli import main
from medsight.data.io import load_image
from medsight.errors import (
    ConfigError,
    DataError,
    DownloadError,
    LeakageError,
    MedsightError,
    UnreadableImageError,
)


def test_unreadable_image_error_names_the_path_and_the_reason() -> None:
    exc = UnreadableImageError("/data/NORMAL/x.png", "empty file (0 bytes)")
    assert str(exc) == "/data/NORMAL/x.png: empty file (0 bytes)"
    assert exc.path == "/data/NORMAL/x.png"
    assert exc.reason == "empty file (0 bytes)"
    assert isinstance(exc, DataError) and isinstance(exc, MedsightError)


def test_reading_a_broken_file_raises_it_with_that_path(tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"")
    with pytest.raises(UnreadableImageError) as caught:
        load_image(broken, (8, 8))
    assert caught.value.path == str(broken)
    assert caught.value.reason == "empty file (0 bytes)"
    assert str(caught.value) == f"{broken}: empty file (0 bytes)"


@pytest.mark.parametrize(
    ("cls", "parent"),
    [
        (DataError, MedsightError),
        (ConfigError, MedsightError),
        (DownloadError, MedsightError),
        (LeakageError, DataError),
        (UnreadableImageError, DataError),
        (MedsightError, Exception),
    ],
)
def test_class_hierarchy(cls: type, parent: type) -> None:
    assert issubclass(cls, parent)


def test_the_branches_stay_apart() -> None:
    assert not issubclass(ConfigError, DataError)
    assert not issubclass(DownloadError, DataError)
    assert not issubclass(DataError, ConfigError)
    assert not issubclass(MedsightError, (ValueError, OSError))  # not caught by accident


def test_every_error_class_of_the_module_is_a_medsight_error() -> None:
    classes = [
        v for v in vars(errors).values() if isinstance(v, type) and v.__module__ == errors.__name__
    ]
    assert {c.__name__ for c in classes} >= {"DataError", "ConfigError", "DownloadError"}
    assert all(issubclass(c, MedsightError) for c in classes)


def test_cli_turns_a_medsight_error_into_exit_code_2_and_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["train", "--data", "somewhere"]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == ["error: train needs --recipe, --out (or --resume RUN_DIR)"]
    assert captured.out == ""


def test_cli_reports_a_config_error_the_same_way(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "--recipe", "malaria-lenet", "--data", ".", "--out", "x", "train.lr"])
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: override 'train.lr' is not of the form")
    assert "Traceback" not in captured.err


def test_other_exceptions_are_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    from medsight import api

    def boom() -> dict:
        raise RuntimeError("a real bug")

    monkeypatch.setattr(api, "list_recipes", boom)
    with pytest.raises(RuntimeError, match="a real bug"):
        main(["recipes", "list"])
