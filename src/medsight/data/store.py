"""A run's decoded images on disk, read a batch at a time: memory does not grow with the data.

Holding every decoded image in RAM made a training's memory grow with its data (8,000 cells:
1.7 GB; CheXpert at 224 px would need 34 GB before the first step). The store is one file of
(N, H, W, C) uint8 rows per data set manifest (the files' SHA-256 in order) and image size,
written once by parallel decoders into a temporary file that is renamed when complete, so it is
never half-written and never stale: other content is another manifest, hence another file.

Rows are read with ``pread`` into the caller's batch, not memory-mapped: pages of a mapped file
count in every reader's resident memory (PSS) until the kernel drops them, while ``pread`` leaves
them in the page cache, which the kernel reclaims when memory is short. The open file is per
process, so forked DataLoader workers and pickled copies share nothing but the file.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from medsight.data.cache import cache_root
from medsight.data.dataset import decode_rows
from medsight.fsutil import atomic_write_text, temp_beside

FORMAT = 1  # bump when the decoded pixels of a file change (e.g. another resize rule)


class PixelStore:
    """Rows of an (N, H, W, C) uint8 array in a file; indexing reads only the rows asked for.

    ``store[i]``, ``store[a:b]``, ``store[ints]`` and ``store[mask]`` return numpy arrays as an
    array would; :meth:`rows` returns a view on some rows without reading any pixels.
    """

    def __init__(self, path: Path, count: int, image_shape: tuple[int, int, int], rows=None):
        self.path, self.count, self.image_shape = Path(path), count, tuple(image_shape)
        self.index = np.arange(count) if rows is None else np.asarray(rows, dtype=np.int64)
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
        return PixelStore(self.path, self.count, self.image_shape, self.index[which])

    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():  # a forked worker opens its own
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def _read(self, rows: np.ndarray) -> np.ndarray:
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


_scratch: list[Path] = []


@atexit.register
def _remove_scratch() -> None:
    for folder in _scratch:
        shutil.rmtree(folder, ignore_errors=True)


def scratch_folder() -> Path:
    """A temporary folder for stores that are not worth keeping, removed when the process ends."""
    folder = Path(tempfile.mkdtemp(prefix="medsight-pixels-"))
    _scratch.append(folder)
    return folder


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
    shape = (size[0], size[1], channels)

    def decode(path: Path) -> tuple[PixelStore, list[tuple[str, str]]]:
        fill = lambda write: decode_rows(paths, size, channels, write, threads, hashes)  # noqa: E731
        return write_store(path, len(paths), shape, fill)

    root = cache_root() if hashes is not None else None
    if root is None:
        return decode(scratch_folder() / "pixels.u8")
    path = root / "stores" / f"{_key(hashes, size, channels)}.u8"
    known = _known_failures(path, len(paths), int(np.prod(shape)))
    if known is not None:
        return PixelStore(path, len(paths), shape), known
    try:
        store, failures = decode(path)
    except OSError:  # a full or read-only cache only costs a scratch copy
        return decode(scratch_folder() / "pixels.u8")
    try:
        atomic_write_text(path.with_suffix(".json"), json.dumps({"failures": failures}))
    except OSError:
        pass
    return store, failures


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
