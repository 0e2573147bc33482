"""The on-disk store of decoded pixels: reads like an array, never half-written, never stale."""

from __future__ import annotations

import multiprocessing
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from medsight.data import dataset as dataset_module
from medsight.data.dataset import ArrayDataset, decode_images
from medsight.data.io import content_sha256
from medsight.data.store import (
    PixelStore,
    decode_to_store,
    map_store,
    write_store,
)

SIZE = (24, 24)


def _store_of(array: np.ndarray, path: Path) -> PixelStore:
    def fill(write):
        for i in range(len(array)):
            write(i, array[i])

    store, _ = write_store(path, len(array), array.shape[1:], fill)
    return store


@pytest.fixture
def array() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (40, 6, 5, 3), dtype=np.uint8)


def test_indexing_reads_what_an_array_would(array: np.ndarray, tmp_path: Path) -> None:
    store = _store_of(array, tmp_path / "s.u8")
    mask = np.zeros(len(array), dtype=bool)
    mask[[0, 3, 4, 5, 39]] = True
    assert store.shape == array.shape and len(store) == len(array)
    np.testing.assert_array_equal(store[7], array[7])
    np.testing.assert_array_equal(store[-1], array[-1])
    np.testing.assert_array_equal(store[5:12], array[5:12])
    np.testing.assert_array_equal(store[[9, 2, 2, 30]], array[[9, 2, 2, 30]])
    np.testing.assert_array_equal(store[mask], array[mask])
    np.testing.assert_array_equal(np.asarray(store), array)


def test_row_views_compose_like_array_indexing(array: np.ndarray, tmp_path: Path) -> None:
    store = _store_of(array, tmp_path / "s.u8")
    keep = np.arange(len(array)) % 3 != 0
    view = store.rows(keep).rows(np.array([0, 5, 6]))
    np.testing.assert_array_equal(np.asarray(view), array[keep][[0, 5, 6]])
    assert view.shape == (3, *array.shape[1:])


def test_a_failed_fill_leaves_no_file(tmp_path: Path) -> None:
    def fill(write):
        write(0, np.ones((2, 2, 1), np.uint8))
        raise RuntimeError("decoder died")

    with pytest.raises(RuntimeError, match="decoder died"):
        write_store(tmp_path / "s.u8", 3, (2, 2, 1), fill)
    assert list(tmp_path.iterdir()) == []


def test_a_short_file_is_an_error_not_zeros(array: np.ndarray, tmp_path: Path) -> None:
    store = _store_of(array, tmp_path / "s.u8")
    with open(store.path, "r+b") as handle:
        handle.truncate(store.row_bytes * 10)
    with pytest.raises(OSError, match="shorter than it should be"):
        store[20]


def _read_rows(store: PixelStore, rows: list[int]) -> bytes:
    return store[rows].tobytes()


def test_pickled_and_forked_copies_read_their_own_file(array: np.ndarray, tmp_path: Path) -> None:
    store = _store_of(array, tmp_path / "s.u8")
    store[0]  # the parent's file is open before the fork
    copy = pickle.loads(pickle.dumps(store.rows(np.arange(10, 20))))
    np.testing.assert_array_equal(copy[:], array[10:20])
    with multiprocessing.get_context("fork").Pool(2) as pool:
        results = pool.starmap(_read_rows, [(store, [1, 2]), (store, [38, 0])])
    assert results == [array[[1, 2]].tobytes(), array[[38, 0]].tobytes()]


def test_dataloader_workers_serve_the_stored_rows(array: np.ndarray, tmp_path: Path) -> None:
    store = _store_of(array, tmp_path / "s.u8")
    labels = np.arange(len(array)) % 2
    data = ArrayDataset(store, labels)
    loader = torch.utils.data.DataLoader(
        data,
        batch_size=8,
        num_workers=2,
        collate_fn=lambda batch: batch,  # as fit.py batches
    )
    images = torch.cat([batch[0] for batch in loader])
    assert tuple(images.shape[1:]) == (3, 6, 5)  # CHW
    np.testing.assert_array_equal(images.numpy(), array.transpose(0, 3, 1, 2))


def test_map_store_transforms_batch_by_batch(array: np.ndarray, tmp_path: Path) -> None:
    store = _store_of(array, tmp_path / "s.u8")
    batches: list[int] = []

    def invert(pixels: np.ndarray) -> np.ndarray:
        batches.append(len(pixels))
        return 255 - pixels

    mapped = map_store(store, invert, batch_size=16)
    np.testing.assert_array_equal(np.asarray(mapped), 255 - array)
    assert batches == [16, 16, 8]


# --- decode_to_store on real cells ------------------------------------------------------------


@pytest.fixture
def cells(malaria_subset: Path, tmp_path: Path) -> tuple[list[str], list[str]]:
    """12 real cells and a broken PNG: paths and SHA-256s."""
    paths = [str(p) for p in sorted(malaria_subset.rglob("*.png"))[::50][:12]]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    paths.insert(5, str(broken))
    return paths, [content_sha256(Path(p)) for p in paths]


def _no_decoding(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(dataset_module, "load_image", refuse)


def test_cached_store_is_reused_with_its_failures(cells, tmp_path: Path, monkeypatch) -> None:
    paths, hashes = cells
    monkeypatch.setenv("MEDSIGHT_CACHE", str(tmp_path / "cache"))
    expected, expected_failures = decode_images(paths, SIZE, 3)
    store, failures = decode_to_store(paths, SIZE, 3, hashes)
    assert store.path.parent == tmp_path / "cache" / "stores"
    np.testing.assert_array_equal(np.asarray(store), expected)
    assert failures == expected_failures and [p for p, _ in failures] == [paths[5]]

    _no_decoding(monkeypatch)
    again, again_failures = decode_to_store(paths, SIZE, 3, hashes)
    assert again.path == store.path and again_failures == failures
    np.testing.assert_array_equal(np.asarray(again), expected)


def test_other_content_or_size_is_another_store(cells, tmp_path: Path, monkeypatch) -> None:
    paths, hashes = cells
    monkeypatch.setenv("MEDSIGHT_CACHE", str(tmp_path / "cache"))
    first, _ = decode_to_store(paths, SIZE, 3, hashes)
    swapped = [paths[1], paths[0], *paths[2:]]
    second, _ = decode_to_store(swapped, SIZE, 3, [hashes[1], hashes[0], *hashes[2:]])
    third, _ = decode_to_store(paths, (16, 16), 3, hashes)
    assert len({first.path, second.path, third.path}) == 3
    np.testing.assert_array_equal(second[0], first[1])
    assert third.shape == (len(paths), 16, 16, 3)


def test_a_damaged_cached_store_is_decoded_again(cells, tmp_path: Path, monkeypatch) -> None:
    paths, hashes = cells
    monkeypatch.setenv("MEDSIGHT_CACHE", str(tmp_path / "cache"))
    store, _ = decode_to_store(paths, SIZE, 3, hashes)
    expected = np.asarray(store)
    with open(store.path, "r+b") as handle:
        handle.truncate(store.row_bytes)  # e.g. a disk that filled up under another tool
    again, _ = decode_to_store(paths, SIZE, 3, hashes)
    np.testing.assert_array_equal(np.asarray(again), expected)


@pytest.mark.parametrize("why", ["cache off", "no hashes", "unwritable cache"])
def test_without_a_usable_cache_the_store_is_scratch(
    cells, tmp_path: Path, monkeypatch, why: str
) -> None:
    paths, hashes = cells
    cache = tmp_path / "cache"
    monkeypatch.setenv("MEDSIGHT_CACHE", "off" if why == "cache off" else str(cache))
    if why == "unwritable cache":  # a file where the folder should be: fails even as root
        cache.mkdir()
        (cache / "stores").write_text("")
    store, failures = decode_to_store(paths, SIZE, 3, None if why == "no hashes" else hashes)
    assert cache not in store.path.parents
    assert [p for p, _ in failures] == [paths[5]]
    np.testing.assert_array_equal(np.asarray(store), decode_images(paths, SIZE, 3)[0])
