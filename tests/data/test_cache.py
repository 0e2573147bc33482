"""The decoded-image cache: where it lives, round trips, and damage that costs only speed."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import platformdirs
import pytest

from medsight.data.cache import cache_root, cached, store

SHA = "ab" + "0123456789abcdef" * 3 + "cdef0123456789"  # 64 hex digits


def _pixels(height: int = 4, width: int = 5, channels: int = 3) -> np.ndarray:
    return np.arange(height * width * channels, dtype=np.uint8).reshape(height, width, channels)


@pytest.mark.parametrize("setting", ["off", "OFF", "Off"])
def test_off_disables_the_cache(monkeypatch, setting: str) -> None:
    monkeypatch.setenv("MEDSIGHT_CACHE", setting)
    assert cache_root() is None


def test_a_folder_setting_is_the_root(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEDSIGHT_CACHE", str(tmp_path / "decoded"))
    assert cache_root() == tmp_path / "decoded"


@pytest.mark.parametrize("unset", [True, False])
def test_default_is_the_user_cache_folder(monkeypatch, tmp_path: Path, unset: bool) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # platformdirs on Linux
    if unset:
        monkeypatch.delenv("MEDSIGHT_CACHE", raising=False)
    else:
        monkeypatch.setenv("MEDSIGHT_CACHE", "")
    expected = Path(platformdirs.user_cache_dir("medsight")) / "decoded"
    assert cache_root() == expected
    assert not expected.exists()  # asking where it is creates nothing


@pytest.mark.parametrize("shape", [(4, 5, 3), (7, 3, 1), (1, 1, 3)])
def test_store_then_cached_round_trips(tmp_path: Path, shape: tuple[int, int, int]) -> None:
    pixels = _pixels(*shape)
    store(tmp_path, SHA, pixels)
    height, width, channels = shape
    entry = tmp_path / f"{height}x{width}x{channels}" / SHA[:2] / f"{SHA}.npy"
    assert entry.is_file()
    got = cached(tmp_path, SHA, (height, width), channels)
    assert got is not None and got.dtype == np.uint8 and np.array_equal(got, pixels)


def test_nothing_stored_gives_none(tmp_path: Path) -> None:
    assert cached(tmp_path, SHA, (4, 5), 3) is None
    assert cached(tmp_path / "missing", SHA, (4, 5), 3) is None


def test_sizes_and_hashes_are_separate_entries(tmp_path: Path) -> None:
    small, grey = _pixels(4, 5, 3), _pixels(4, 5, 1) + 1
    store(tmp_path, SHA, small)
    store(tmp_path, SHA, grey)
    other = "cd" + SHA[2:]
    store(tmp_path, other, small * 2)
    assert np.array_equal(cached(tmp_path, SHA, (4, 5), 3), small)
    assert np.array_equal(cached(tmp_path, SHA, (4, 5), 1), grey)
    assert np.array_equal(cached(tmp_path, other, (4, 5), 3), small * 2)
    assert len(list(tmp_path.rglob("*.npy"))) == 3


def test_storing_again_replaces_the_entry(tmp_path: Path) -> None:
    store(tmp_path, SHA, _pixels())
    store(tmp_path, SHA, _pixels() + 7)
    assert np.array_equal(cached(tmp_path, SHA, (4, 5), 3), _pixels() + 7)
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [f"{SHA}.npy"]  # no temp


@pytest.mark.parametrize(("size", "channels"), [((5, 4), 3), ((4, 5), 1), ((8, 10), 3)])
def test_another_size_is_not_served(tmp_path: Path, size: tuple[int, int], channels: int) -> None:
    store(tmp_path, SHA, _pixels(4, 5, 3))
    assert cached(tmp_path, SHA, size, channels) is None


def _entry(root: Path) -> Path:
    path = root / "4x5x3" / SHA[:2] / f"{SHA}.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"not a numpy file at all", id="garbage"),
        pytest.param(_npy(_pixels())[:-10], id="truncated-data"),
        pytest.param(_npy(_pixels())[:40], id="truncated-header"),
        pytest.param(_npy(_pixels(5, 4, 3)), id="wrong-shape"),
        pytest.param(_npy(_pixels(4, 5, 1)), id="wrong-channels"),
        pytest.param(_npy(np.array([{"a": 1}], dtype=object), True), id="pickled-object"),
    ],
)
def test_a_damaged_entry_gives_none(tmp_path: Path, content: bytes) -> None:
    _entry(tmp_path).write_bytes(content)
    assert cached(tmp_path, SHA, (4, 5), 3) is None


def test_an_empty_entry_gives_none(tmp_path: Path) -> None:
    _entry(tmp_path).write_bytes(b"")
    assert cached(tmp_path, SHA, (4, 5), 3) is None


def test_a_damaged_entry_is_repaired_by_storing(tmp_path: Path) -> None:
    _entry(tmp_path).write_bytes(b"garbage")
    store(tmp_path, SHA, _pixels())
    assert np.array_equal(cached(tmp_path, SHA, (4, 5), 3), _pixels())


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders anyway")
def test_a_read_only_cache_folder_only_costs_speed(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    root.mkdir()
    root.chmod(0o500)
    try:
        store(root, SHA, _pixels())  # no error
        assert cached(root, SHA, (4, 5), 3) is None
        assert list(root.iterdir()) == []
    finally:
        root.chmod(0o700)


def test_an_unwritable_cache_root_only_costs_speed(tmp_path: Path) -> None:
    # a file where the cache folder should be: every write fails (as root too)
    root = tmp_path / "cache"
    root.write_text("not a folder")
    store(root, SHA, _pixels())  # no error
    assert cached(root, SHA, (4, 5), 3) is None
    assert root.read_text() == "not a folder"
