"""Atomic writes: complete files or the old ones, never a half-written file or a leftover."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from medsight import fsutil
from medsight.fsutil import atomic_dir, atomic_write_bytes, atomic_write_text, temp_beside


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield 0o022
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_text_creates_parents_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "report.txt"
    atomic_write_text(target, "héllo\n")
    assert target.read_bytes() == "héllo\n".encode()
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.txt"]


def test_write_bytes_replaces_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "model.bin"
    target.write_bytes(b"old contents, longer than the new ones")
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert list(tmp_path.iterdir()) == [target]


def test_replacement_is_a_rename_not_an_in_place_rewrite(tmp_path: Path) -> None:
    target = tmp_path / "config.yaml"
    target.write_text("old")
    before = target.stat().st_ino
    reader = open(target, "rb")  # a reader holding the old file keeps seeing all of it
    try:
        atomic_write_text(target, "new")
        assert reader.read() == b"old"
    finally:
        reader.close()
    assert target.stat().st_ino != before and target.read_text() == "new"


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_files_get_the_usual_mode_not_mkstemps(tmp_path: Path, mask: int) -> None:
    old = os.umask(mask)
    try:
        atomic_write_text(tmp_path / "t.txt", "x")
        atomic_write_bytes(tmp_path / "b.bin", b"x")
        beside = temp_beside(tmp_path / "c.txt")
    finally:
        os.umask(old)
    for path in (tmp_path / "t.txt", tmp_path / "b.bin", beside):
        assert _mode(path) == 0o666 & ~mask, path


def test_a_failed_replace_keeps_the_old_file_and_removes_the_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "metrics.json"
    target.write_text('{"accuracy": 0.9}')

    def failing_replace(src, dst) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fsutil.os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_text(target, '{"accuracy": 0.1}')
    assert target.read_text() == '{"accuracy": 0.9}'
    assert list(tmp_path.iterdir()) == [target]


def test_an_interrupt_while_writing_removes_the_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "new.txt"

    def interrupted(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(fsutil.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(target, b"data")
    assert list(tmp_path.iterdir()) == []


def test_temp_beside_is_an_empty_hidden_file_next_to_the_path(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "model.onnx"
    first, second = temp_beside(target), temp_beside(target)
    assert first.parent == target.parent and first.is_file()
    assert first.read_bytes() == b""
    assert first.name.startswith(".model.onnx.") and first.name.endswith(".tmp")
    assert first != second  # each call its own file
    assert not target.exists()


def test_atomic_dir_replaces_the_folder_once_the_block_completes(tmp_path: Path) -> None:
    target = tmp_path / "bundle"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_dir(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target and tmp.is_dir()
        (tmp / "new.txt").write_text("new")
        assert (target / "old.txt").read_text() == "old"  # untouched until the end
        assert not (target / "new.txt").exists()
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no .tmp, no .old


def test_atomic_dir_creates_a_new_folder_with_the_usual_mode(tmp_path: Path, umask_022) -> None:
    target = tmp_path / "parents" / "made" / "out"
    with atomic_dir(target) as tmp:
        (tmp / "file").write_text("x")
    assert (target / "file").read_text() == "x"
    assert _mode(target) == 0o755


def test_atomic_dir_keeps_the_old_folder_when_the_block_raises(tmp_path: Path) -> None:
    target = tmp_path / "bundle"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(ValueError, match="half way"):
        with atomic_dir(target) as tmp:
            (tmp / "partial.txt").write_text("partial")
            raise ValueError("half way")
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_atomic_dir_that_raises_leaves_no_new_folder(tmp_path: Path) -> None:
    target = tmp_path / "fresh"
    with pytest.raises(RuntimeError):
        with atomic_dir(target):
            raise RuntimeError
    assert list(tmp_path.iterdir()) == []
