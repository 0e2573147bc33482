"""Decode every image once, then serve batches of tensors from the decoded pixels.

Decoding, not the model, bounds small-image training on CPU: keeping the resized pixels (in the
store of :mod:`medsight.data.store`, or an array) means epochs after the first never touch the
files again. Unreadable files are found here and reported instead of crashing an epoch: before
training, or (decoded while the first epoch runs) before anything trained on them is kept.

Randomness is a function of (seed, epoch, image) only (:class:`EpochSampler` and the seeded
items of :class:`ArrayDataset`), so a resumed, multi-worker or multi-process run draws the same
shuffles and augmentations as one uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from medsight.data.cache import cache_root, cached, store
from medsight.data.io import load_image
from medsight.errors import UnreadableImageError
from medsight.progress import Progress
from medsight.threads import each_in_threads

EPOCH_STRIDE = 1_000_003  # a prime: (seed, epoch, index) -> distinct RNG seeds


def decode_rows(
    paths: list[str],
    size: tuple[int, int],
    channels: int,
    write: Callable[[int, np.ndarray], None],
    threads: int = 2,
    hashes: list[str] | None = None,
    desc: str = "decode",
    order: Sequence[int] | None = None,
    failed: Callable[[int, str], None] | None = None,
) -> list[tuple[str, str]]:
    """Decode and resize each of ``paths`` in parallel (taken in ``order`` when given) and hand
    it to ``write(i, pixels)``.

    With the files' SHA-256 ``hashes``, pixels come from (and go to) the disk cache of
    :mod:`medsight.data.cache`. Returns ``(path, reason)`` for the files that could not be read
    (their rows are never written; ``failed(i, reason)`` hears of each at once), so callers can
    drop and report them.
    """
    failures: list[tuple[str, str]] = []
    root = cache_root() if hashes is not None else None

    def one(k: int) -> None:
        i = int(order[k]) if order is not None else k
        if root is not None:
            hit = cached(root, hashes[i], size, channels)
            if hit is not None:
                write(i, hit)
                return
        try:
            pixels = load_image(paths[i], size=size, channels=channels)
        except UnreadableImageError as exc:
            failures.append((paths[i], exc.reason))
            if failed is not None:
                failed(i, exc.reason)
            return
        write(i, pixels)
        if root is not None:
            store(root, hashes[i], pixels)

    with Progress(len(paths), desc, "img") as bar:
        for _ in each_in_threads(one, len(paths), threads):
            bar.update()
    return failures


def decode_images(
    paths: list[str],
    size: tuple[int, int],
    channels: int,
    threads: int = 2,
    desc: str = "decode",
    hashes: list[str] | None = None,
) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """:func:`decode_rows` into an (N, H, W, C) uint8 array in memory (rows of unreadable files
    are left zero): for the few images an evaluation or a benchmark decodes. A training decodes
    into :func:`medsight.data.store.decode_to_store` instead."""
    pixels = np.zeros((len(paths), size[0], size[1], channels), dtype=np.uint8)
    failures = decode_rows(paths, size, channels, pixels.__setitem__, threads, hashes, desc)
    return pixels, failures


class EpochSampler(Sampler[int]):
    """Shuffled or class-balanced indices drawn from (seed, epoch), sharded across processes.

    Each index it yields is ``(epoch + 1) * len(labels) + i`` so that :class:`ArrayDataset` can seed
    the augmentation of image ``i`` in this epoch, whichever worker or process draws it.
    """

    def __init__(self, labels: np.ndarray, seed: int, balanced: bool = False):
        self.labels, self.seed, self.balanced = np.asarray(labels), seed, balanced
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # called by Lightning at every epoch start
        self.epoch = epoch

    def _shard(self) -> tuple[int, int]:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def __len__(self) -> int:
        _, world = self._shard()
        return -(-len(self.labels) // world)

    def __iter__(self) -> Iterator[int]:
        n = len(self.labels)
        generator = torch.Generator().manual_seed(self.seed * EPOCH_STRIDE + self.epoch)
        if self.balanced:
            counts = np.bincount(self.labels)
            weights = torch.as_tensor(1.0 / counts[self.labels], dtype=torch.double)
            order = torch.multinomial(weights, n, replacement=True, generator=generator)
        else:
            order = torch.randperm(n, generator=generator)
        rank, world = self._shard()
        size = len(self) * world
        order = torch.cat([order, order[: size - n]])[rank::world]  # equal share per process
        return iter((order + (self.epoch + 1) * n).tolist())

    def first_rows(self) -> np.ndarray:
        """The distinct rows epoch 0 draws, in the order it first draws them (over every
        process of a multi-process run): decoded in this order, that epoch can start at once."""
        saved, self.epoch = self.epoch, 0
        try:
            rows = np.fromiter(iter(self), dtype=np.int64) - len(self.labels)
        finally:
            self.epoch = saved
        _, first = np.unique(rows, return_index=True)
        return rows[np.sort(first)]


class EpochLoader(DataLoader):
    """A DataLoader over an :class:`EpochSampler` that sets the sampler's epoch itself, from
    ``epoch_of()``, each time an iterator is made.

    Lightning sets the epoch only after it has made a resumed run's first iterator, and worker
    processes fetch their first batches as soon as it exists: without this, the first epoch
    after a resume would replay epoch 0's order and draws.
    """

    epoch_of: Callable[[], int] | None = None

    def __iter__(self):
        if self.epoch_of is not None:
            self.sampler.set_epoch(self.epoch_of())
        return super().__iter__()


class ArrayDataset(Dataset):
    """(uint8 CHW image, label, augmentation seed) items from decoded uint8 pixels: an (N, H, W, C)
    array or a :class:`medsight.data.store.PixelStore`, which reads only the rows of each batch.

    The DataLoader fetches whole batches with :meth:`__getitems__` (one indexing of the array),
    and its :class:`medsight.data.augment.BatchTransform` augments and normalises them at once.
    """

    def __init__(self, pixels: np.ndarray, labels: np.ndarray, seed: int = 0):
        self.pixels, self.labels, self.seed = pixels, labels, seed

    def __len__(self) -> int:
        return len(self.pixels)

    def _split(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # keys drawn by EpochSampler carry the epoch: the seed is a function of (seed, epoch, i)
        epochs, rows = np.divmod(keys.astype(np.int64), len(self.pixels))
        return rows, (self.seed * EPOCH_STRIDE + epochs) * EPOCH_STRIDE + rows

    def _labels(self, rows: np.ndarray) -> torch.Tensor:
        """Class indices (int64), or a multi-label task's (N, L) float32 targets (NaN: missing)."""
        labels = self.labels[rows]
        floats = np.issubdtype(labels.dtype, np.floating)
        return torch.from_numpy(labels.astype(np.float32 if floats else np.int64))

    def __getitem__(self, key: int) -> tuple[torch.Tensor, int | torch.Tensor, int]:
        rows, seeds = self._split(np.array([key]))
        image = torch.from_numpy(self.pixels[rows[0]]).permute(2, 0, 1)
        label = self._labels(rows)[0]
        return image, label if label.is_floating_point() else int(label), int(seeds[0])

    def __getitems__(self, keys: list[int]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """A batch: (N, C, H, W) uint8 images, labels and seeds."""
        rows, seeds = self._split(np.asarray(keys))
        images = torch.from_numpy(self.pixels[rows]).permute(0, 3, 1, 2)
        return images, self._labels(rows), seeds.tolist()
