"""A run's decoded images on disk, read a batch at a time: memory does not grow with the data.

Holding every decoded image in RAM made a training's memory grow with its data (8,000 cells:
1.7 GB; CheXpert at 224 px would need 34 GB before the first step). The store is one file of
(N, H, W, C) uint8 rows per data set manifest (the files' SHA-256 in order) and image size,
written once by parallel decoders into a temporary file that is renamed when complete, so it is
never half-written and never stale: other content is another manifest, hence another file.
While it is written (:class:`StoreDecode`, on a background thread) it can already be read: a
read waits for the rows it needs, so a first epoch can train on the rows decoded so far.

Rows are read with ``pread`` into the caller's batch, not memory-mapped: pages of a mapped file
count in every reader's resident memory (PSS) until the kernel drops them, while ``pread`` leaves
them in the page cache, which the kernel reclaims when memory is short. The open file is per
process, so forked DataLoader workers and pickled copies share nothing but the file.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medsight.data.cache import cache_root
from medsight.data.dataset import decode_rows
from medsight.data.scratch import remove_abandoned, scratch_folder
from medsight.fsutil import atomic_write_text, temp_beside

FORMAT = 1  # bump when the decoded pixels of a file change (e.g. another resize rule)
READY, FAILED = b"\x01", b"\x02"  # a row's state while its store is filled (0: not yet)


class DecodeCancelled(Exception):
    """Decoding was stopped because the run that needed it stopped."""


@dataclass(frozen=True)
class Filling:
    """Where a store being decoded is written (``temp``, renamed when complete), the file of its
    rows' states (a byte each), and the process decoding it."""

    temp: Path
    states: Path
    owner: int


class PixelStore:
    """Rows of an (N, H, W, C) uint8 array in a file; indexing reads only the rows asked for.

    ``store[i]``, ``store[a:b]``, ``store[ints]`` and ``store[mask]`` return numpy arrays as an
    array would; :meth:`rows` returns a view on some rows without reading any pixels.
    """

    def __init__(
        self,
        path: Path,
        count: int,
        image_shape: tuple[int, int, int],
        rows=None,
        filling: Filling | None = None,
    ):
        self.path, self.count, self.image_shape = Path(path), count, tuple(image_shape)
        self.index = np.arange(count) if rows is None else np.asarray(rows, dtype=np.int64)
        self.filling = filling  # still being decoded (:class:`StoreDecode`): reads wait for rows
        self._waiting = filling is not None
        self._fd: int | None = None
        self._pid = -1

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.image_shape))

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.index), *self.image_shape)

    dtype = np.dtype(np.uint8)

    def __len__(self) -> int:
        return len(self.index)

    def rows(self, which) -> PixelStore:
        """The store restricted to ``which`` (a boolean mask or row numbers); nothing is read."""
        rows = self.index[which]
        return PixelStore(self.path, self.count, self.image_shape, rows, self.filling)

    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # a forked worker opens its own
            self._fd, self._pid = self._open(), os.getpid()
        return self._fd

    def _open(self) -> int:
        if self.filling is None:
            return os.open(self.path, os.O_RDONLY)
        for path in (self.filling.temp, self.path):  # complete: renamed to its own name
            with contextlib.suppress(FileNotFoundError):
                return os.open(path, os.O_RDONLY)
        raise DecodeCancelled(f"{self.path}: decoding stopped before the store was complete")

    def _wait_for(self, rows: np.ndarray) -> None:
        """Wait until ``rows`` are decoded (or found unreadable: they then read as zeros)."""
        with open(self.filling.states, "rb") as handle:
            while True:
                handle.seek(0)
                states = np.frombuffer(handle.read(), dtype=np.uint8)
                if states.all():
                    self._waiting = False  # every row is in: no more waiting in this process
                    return
                if states[rows].all():
                    return
                try:
                    os.kill(self.filling.owner, 0)
                except ProcessLookupError:
                    raise DecodeCancelled(
                        f"{self.path}: the process decoding the images ended"
                    ) from None
                time.sleep(0.005)

    def _read(self, rows: np.ndarray) -> np.ndarray:
        if self._waiting:
            self._wait_for(rows)
        out = np.empty((len(rows), *self.image_shape), dtype=np.uint8)
        flat, fd, size = out.reshape(len(rows), -1), self._file(), self.row_bytes
        start = 0
        while start < len(rows):  # consecutive rows are read at once
            end = start + 1
            while end < len(rows) and rows[end] == rows[end - 1] + 1:
                end += 1
            view = memoryview(flat[start:end]).cast("B")
            if os.preadv(fd, [view], int(rows[start]) * size) != len(view):
                raise OSError(f"{self.path}: the decoded-image store is shorter than it should be")
            start = end
        return out

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self._read(self.index[[key]])[0]
        return self._read(np.atleast_1d(self.index[key]))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        pixels = self[:]
        return pixels if dtype is None else pixels.astype(dtype)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None, "_pid": -1}

    def __del__(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)


def _key(hashes: list[str], size: tuple[int, int], channels: int) -> str:
    manifest = json.dumps([FORMAT, list(size), channels, hashes])
    return hashlib.sha256(manifest.encode()).hexdigest()


_running: weakref.WeakSet[StoreDecode] = weakref.WeakSet()


@atexit.register
def _stop_decoding() -> None:  # registered after scratch's remove_own, so it runs before it
    for job in list(_running):
        job.cancel()


def write_store(
    path: Path,
    count: int,
    image_shape: tuple[int, int, int],
    fill: Callable[[Callable[[int, np.ndarray], None]], Any],
) -> tuple[PixelStore, Any]:
    """Create the store at ``path`` and return it with what ``fill`` returned: ``fill(write)``
    calls ``write(i, pixels)`` for each row, from any thread; the file appears under its name only
    once ``fill`` has returned."""
    row_bytes = int(np.prod(image_shape))
    tmp = temp_beside(path)
    try:
        with open(tmp, "r+b") as handle:
            handle.truncate(count * row_bytes)  # rows never written read as zeros
            fd = handle.fileno()

            def write(i: int, pixels: np.ndarray) -> None:
                os.pwrite(fd, np.ascontiguousarray(pixels, dtype=np.uint8).tobytes(), i * row_bytes)

            result = fill(write)
            os.fsync(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return PixelStore(path, count, image_shape), result


def _known_failures(path: Path, count: int, row_bytes: int) -> list[tuple[str, str]] | None:
    """The unreadable files of a complete store at ``path``, or None when there is none."""
    try:
        failures = json.loads(path.with_suffix(".json").read_text())["failures"]
        if path.stat().st_size == count * row_bytes:
            return [(str(p), str(reason)) for p, reason in failures]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # absent or damaged: decoded again
    return None


ABANDONED_AFTER_S = 600  # a store being written is written to every few milliseconds


def _remove_partial_copies(path: Path) -> None:
    """Remove the partial copies of the store ``path`` that a killed run left (its temporary
    files, untouched for :data:`ABANDONED_AFTER_S`): they can be as large as the store."""
    for temp in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(OSError):
            if time.time() - temp.stat().st_mtime > ABANDONED_AFTER_S:
                temp.unlink()


class StoreDecode:
    """Decoding ``paths`` into a store on a background thread, in the row ``order`` given.

    :attr:`store` can be read at once, from any process: a read waits for the rows it needs
    (their states are a byte each in a small scratch file). Decoded in the order a training's first
    epoch reads them, that epoch runs while decoding goes on instead of after it. A complete store
    already in the cache is opened at once; an unreadable file's row reads as zeros and is listed
    in :attr:`failures` as soon as it is found.
    """

    def __init__(
        self,
        paths: list[str],
        size: tuple[int, int],
        channels: int,
        hashes: list[str] | None = None,
        threads: int = 2,
        order: np.ndarray | None = None,
        keep: bool = True,
    ):
        remove_abandoned()  # what killed runs left, even when this one needs no scratch
        self.paths, self.size, self.channels, self.hashes = paths, size, channels, hashes
        self.threads, self.order = threads, order
        self.shape = (size[0], size[1], channels)
        self.failures: list[tuple[str, str]] = []
        self.error: BaseException | None = None
        self._cancelled = threading.Event()
        root = cache_root() if hashes is not None and keep else None
        self.kept = root is not None
        if root is not None:
            path = root / "stores" / f"{_key(hashes, size, channels)}.u8"
            known = _known_failures(path, len(paths), int(np.prod(self.shape)))
            if known is not None:
                self.path, self.failures, self._thread = path, known, None
                self.store = self._complete(path)
                return
            _remove_partial_copies(path)
            try:
                self._start(path)
                return
            except OSError:  # a full or read-only cache only costs a scratch copy
                self.kept = False
        self._start(scratch_folder() / "pixels.u8")

    def _complete(self, path: Path) -> PixelStore:
        return PixelStore(path, len(self.paths), self.shape)

    def _start(self, path: Path) -> None:
        self.path, count = path, len(self.paths)
        self._temp, states = temp_beside(path), scratch_folder() / "states.u8"
        try:
            with open(self._temp, "r+b") as handle:
                handle.truncate(count * int(np.prod(self.shape)))  # unwritten rows read as zeros
            states.write_bytes(bytes(count))
        except BaseException:
            self._temp.unlink(missing_ok=True)
            raise
        filling = Filling(self._temp, states, os.getpid())
        self.store = PixelStore(path, count, self.shape, filling=filling)
        self._thread = threading.Thread(target=self._run, name="medsight-decode", daemon=True)
        self._thread.start()
        _running.add(self)

    def _run(self) -> None:
        row_bytes, count = int(np.prod(self.shape)), len(self.paths)
        states = os.open(self.store.filling.states, os.O_WRONLY)
        pixels = os.open(self._temp, os.O_WRONLY)
        try:

            def write(i: int, row: np.ndarray) -> None:
                if self._cancelled.is_set():
                    raise DecodeCancelled(f"decoding into {self.path} was stopped")
                row = np.ascontiguousarray(row, dtype=np.uint8)
                os.pwrite(pixels, row.tobytes(), i * row_bytes)
                os.pwrite(states, READY, i)

            def failed(i: int, reason: str) -> None:
                self.failures.append((self.paths[i], reason))
                os.pwrite(states, FAILED, i)

            decode_rows(
                self.paths, self.size, self.channels, write, self.threads, self.hashes,
                order=self.order, failed=failed,
            )  # fmt: skip
            os.fsync(pixels)
            os.replace(self._temp, self.path)
            if self.kept:
                failures = json.dumps({"failures": self.failures})
                with contextlib.suppress(OSError):
                    atomic_write_text(self.path.with_suffix(".json"), failures)
        except BaseException as exc:  # readers must never wait for rows that will not come
            self.error = exc
            os.pwrite(states, FAILED * count, 0)
        finally:
            os.close(pixels)
            os.close(states)

    @property
    def done(self) -> bool:
        return self._thread is None or not self._thread.is_alive()

    def wait(self) -> None:
        """Wait until every row is decoded (or decoding stopped)."""
        if self._thread is not None:
            self._thread.join()

    def cancel(self) -> None:
        """Stop decoding (the run stopped): nothing half-written is kept."""
        self._cancelled.set()
        self.wait()
        if self.error is not None:
            self._temp.unlink(missing_ok=True)

    def result(self) -> tuple[PixelStore, list[tuple[str, str]]]:
        """The complete store and the ``(path, reason)`` of the unreadable files, once decoding
        has ended; an error that stopped it is raised (a full cache only costs a scratch copy)."""
        self.wait()
        if self.error is not None:
            self._temp.unlink(missing_ok=True)
        if isinstance(self.error, OSError) and self.kept:
            return StoreDecode(
                self.paths, self.size, self.channels, self.hashes, self.threads, keep=False
            ).result()
        if self.error is not None:
            raise self.error
        row = {path: i for i, path in enumerate(self.paths)}
        return self._complete(self.path), sorted(self.failures, key=lambda f: row[f[0]])


def decode_to_store(
    paths: list[str],
    size: tuple[int, int],
    channels: int,
    hashes: list[str] | None = None,
    threads: int = 2,
) -> tuple[PixelStore, list[tuple[str, str]]]:
    """Decode and resize ``paths`` into a store (rows of unreadable files are zero), and the
    ``(path, reason)`` of those files.

    With the files' SHA-256 ``hashes`` and the disk cache on (``MEDSIGHT_CACHE``), the store is
    kept in the cache under its manifest, and a later run on the same data opens it at once;
    otherwise it is a scratch file removed when the process ends.
    """
    return StoreDecode(paths, size, channels, hashes, threads).result()


def map_store(
    store: PixelStore | np.ndarray,
    transform: Callable[[np.ndarray], np.ndarray],
    batch_size: int = 64,
) -> PixelStore:
    """A scratch store of ``transform`` applied to ``store``'s rows a batch at a time (e.g. the
    lung crop), so that no more than a batch of either is in memory."""

    def fill(write: Callable[[int, np.ndarray], None]) -> None:
        for start in range(0, len(store), batch_size):
            for offset, pixels in enumerate(transform(store[start : start + batch_size])):
                write(start + offset, pixels)

    shape = tuple(store.shape[1:])
    mapped, _ = write_store(scratch_folder() / "pixels.u8", len(store), shape, fill)
    return mapped
