"""Decoding into a store in the background: rows can be read as soon as they are decoded."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from medsight.data import dataset as dataset_module
from medsight.data.dataset import decode_images
from medsight.data.io import content_sha256
from medsight.data.store import DecodeCancelled, StoreDecode

SIZE = (24, 24)


@pytest.fixture
def cells(malaria_subset: Path, tmp_path: Path) -> list[str]:
    """12 real cells and a truncated PNG (a real cell cut short) at row 5."""
    paths = [str(p) for p in sorted(malaria_subset.rglob("*.png"))[::50][:12]]
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(Path(paths[0]).read_bytes()[:300])
    paths.insert(5, str(truncated))
    return paths


class Gate:
    """``load_image`` held back for chosen paths until :meth:`open` is called; records the
    order in which files are decoded."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, held: set[str]):
        self.held, self.order, self._open = held, [], threading.Event()
        real = dataset_module.load_image

        def load(path, *args, **kwargs):
            self.order.append(str(path))
            if str(path) in self.held:
                assert self._open.wait(30), "the gate was never opened"
            return real(path, *args, **kwargs)

        monkeypatch.setattr(dataset_module, "load_image", load)

    def open(self) -> None:
        self._open.set()


def test_rows_are_decoded_in_the_order_given(cells: list[str], monkeypatch) -> None:
    gate = Gate(monkeypatch, set())
    order = np.arange(len(cells))[::-1]
    job = StoreDecode(cells, SIZE, 3, threads=1, order=order)
    store, failures = job.result()
    assert gate.order == [cells[i] for i in order]
    expected, expected_failures = decode_images(cells, SIZE, 3)
    np.testing.assert_array_equal(np.asarray(store), expected)
    assert failures == expected_failures and [p for p, _ in failures] == [cells[5]]


def test_decoded_rows_are_read_while_the_rest_is_still_decoding(
    cells: list[str], monkeypatch
) -> None:
    expected, _ = decode_images(cells, SIZE, 3)
    gate = Gate(monkeypatch, {cells[-1]})
    job = StoreDecode(cells, SIZE, 3, threads=1, order=np.arange(len(cells)))
    np.testing.assert_array_equal(job.store[[0, 3, 7]], expected[[0, 3, 7]])
    assert not job.done  # the last file is held back
    waited: list[np.ndarray] = []
    reader = threading.Thread(target=lambda: waited.append(job.store[[2, len(cells) - 1]]))
    reader.start()
    reader.join(0.3)
    assert reader.is_alive() and not waited  # a row not yet decoded is waited for
    gate.open()
    reader.join(30)
    np.testing.assert_array_equal(waited[0], expected[[2, len(cells) - 1]])
    store, _ = job.result()
    assert store.path == job.path and store.path.is_file()
    np.testing.assert_array_equal(np.asarray(job.store), expected)  # the view reads it too


def _read(store, rows: list[int]) -> bytes:
    return store[rows].tobytes()


def test_a_forked_reader_waits_for_its_rows(cells: list[str], monkeypatch) -> None:
    expected, _ = decode_images(cells, SIZE, 3)
    gate = Gate(monkeypatch, {cells[8]})
    job = StoreDecode(cells, SIZE, 3, threads=1, order=np.arange(len(cells)))
    with multiprocessing.get_context("fork").Pool(1) as pool:
        pending = pool.apply_async(_read, (job.store, [1, 8, 11]))
        time.sleep(0.3)
        assert not pending.ready()
        gate.open()
        assert pending.get(30) == expected[[1, 8, 11]].tobytes()
    job.result()


def test_an_unreadable_file_is_known_at_once_and_reads_as_zeros(
    cells: list[str], monkeypatch
) -> None:
    gate = Gate(monkeypatch, {cells[-1]})  # decoding is still going on below
    job = StoreDecode(cells, SIZE, 3, threads=1, order=np.arange(len(cells)))
    deadline = time.monotonic() + 30
    while not job.failures and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [p for p, _ in job.failures] == [cells[5]] and not job.done
    assert "truncated" in job.failures[0][1]
    assert not job.store[5].any()
    gate.open()
    job.result()


def test_a_cancelled_decode_keeps_nothing_and_wakes_its_readers(
    cells: list[str], tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("MEDSIGHT_CACHE", str(tmp_path / "cache"))
    hashes = [content_sha256(p) for p in cells]
    gate = Gate(monkeypatch, {cells[3]})
    job = StoreDecode(cells, SIZE, 3, hashes, threads=1, order=np.arange(len(cells)))
    errors: list[BaseException] = []

    def read() -> None:
        try:
            job.store[[4]]
        except Exception as exc:  # noqa: BLE001 - any error is recorded and checked below
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    canceller = threading.Thread(target=job.cancel)
    canceller.start()
    gate.open()
    canceller.join(30)
    reader.join(30)
    assert not reader.is_alive()  # its rows were marked: no reader waits forever
    # it read zeros (before the partial file went) or was told that decoding stopped
    assert all(isinstance(e, DecodeCancelled) for e in errors), errors
    assert isinstance(job.error, DecodeCancelled)
    stores = tmp_path / "cache" / "stores"
    assert not job.path.exists() and not list(stores.glob("*.tmp")) and not list(stores.iterdir())
    with pytest.raises(DecodeCancelled):
        job.result()


def test_a_complete_cached_store_is_open_at_once(cells, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MEDSIGHT_CACHE", str(tmp_path / "cache"))
    hashes = [content_sha256(p) for p in cells]
    first, failures = StoreDecode(cells, SIZE, 3, hashes, order=np.arange(13)[::-1]).result()
    Gate(monkeypatch, set(cells))  # any decoding would wait for 30 s and fail
    again = StoreDecode(cells, SIZE, 3, hashes)
    assert again.done and again.store.filling is None
    store, again_failures = again.result()
    assert store.path == first.path and again_failures == failures
    np.testing.assert_array_equal(np.asarray(store), np.asarray(first))


def test_partial_stores_of_killed_runs_are_removed(cells, tmp_path: Path, monkeypatch) -> None:
    """A run killed while decoding leaves its temporary file; the next decode of the same store
    removes it once nothing has written to it for 10 minutes (another process may be writing)."""
    monkeypatch.setenv("MEDSIGHT_CACHE", str(tmp_path / "cache"))
    hashes = [content_sha256(p) for p in cells]
    job = StoreDecode(cells, SIZE, 3, hashes)
    job.result()
    stores = tmp_path / "cache" / "stores"
    abandoned, active = (stores / f".{job.path.name}.{tag}.tmp" for tag in ("old", "new"))
    for temp in (abandoned, active):
        temp.write_bytes(b"\0" * 64)
    os.utime(abandoned, (time.time() - 3600, time.time() - 3600))
    job.path.unlink()  # the store must be decoded again
    StoreDecode(cells, SIZE, 3, hashes).result()
    assert not abandoned.exists() and active.exists()
