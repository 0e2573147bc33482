"""Decode every image once into a uint8 array in RAM, then serve tensors from it.

Decoding, not the model, bounds small-image training on CPU: caching the resized pixels means
epochs after the first never touch the files again. Unreadable files are found here, before
training starts, and reported instead of crashing in the middle of an epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch.utils.data import Dataset

from medsight.data.io import load_image
from medsight.errors import UnreadableImageError
from medsight.progress import Progress


def decode_images(
    paths: list[str], size: tuple[int, int], channels: int, threads: int = 2, desc: str = "decode"
) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Decode and resize ``paths`` into an (N, H, W, C) uint8 array.

    Returns the array (rows of unreadable files are left zero) and a list of
    ``(path, reason)`` for those files, so callers can drop and report them.
    """
    pixels = np.zeros((len(paths), size[0], size[1], channels), dtype=np.uint8)
    failures: list[tuple[str, str]] = []

    def one(i: int) -> None:
        try:
            pixels[i] = load_image(paths[i], size=size, channels=channels)
        except UnreadableImageError as exc:
            failures.append((paths[i], exc.reason))

    with ThreadPoolExecutor(max(1, threads)) as pool, Progress(len(paths), desc, "img") as bar:
        for _ in pool.map(one, range(len(paths))):
            bar.update()
    return pixels, failures


class ArrayDataset(Dataset):
    """(image tensor, label) pairs from a decoded uint8 array and a transform."""

    def __init__(
        self,
        pixels: np.ndarray,
        labels: np.ndarray,
        transform: Callable[[torch.Tensor], torch.Tensor],
    ):
        self.pixels, self.labels, self.transform = pixels, labels, transform

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = torch.from_numpy(self.pixels[i]).permute(2, 0, 1)
        return self.transform(image), int(self.labels[i])
