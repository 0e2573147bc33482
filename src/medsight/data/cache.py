"""A disk cache of decoded, resized images, keyed by content hash and size: never stale.

Decoding large X-ray JPEGs or DICOM files dominates small-model training on a CPU; a second
run, a resumed run or another fold reads the resized pixels back instead. A changed file has a
new SHA-256, so it can never be served stale. ``MEDSIGHT_CACHE`` sets the folder (default: the
user cache folder); ``MEDSIGHT_CACHE=off`` disables it.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import platformdirs

from medsight.fsutil import atomic_write_bytes


def cache_root() -> Path | None:
    setting = os.environ.get("MEDSIGHT_CACHE", "")
    if setting.lower() == "off":
        return None
    return Path(setting) if setting else Path(platformdirs.user_cache_dir("medsight")) / "decoded"


def _entry(root: Path, sha256: str, size: tuple[int, int], channels: int) -> Path:
    return root / f"{size[0]}x{size[1]}x{channels}" / sha256[:2] / f"{sha256}.npy"


def cached(root: Path, sha256: str, size: tuple[int, int], channels: int) -> np.ndarray | None:
    """The cached pixels, or None (absent, or damaged: then it is decoded again)."""
    entry = _entry(root, sha256, size, channels)
    try:
        pixels = np.load(entry, allow_pickle=False)
    except (OSError, ValueError, EOFError):  # EOFError: an empty file
        return None
    return pixels if pixels.shape == (size[0], size[1], channels) else None


def store(root: Path, sha256: str, pixels: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, pixels, allow_pickle=False)
    height, width, channels = pixels.shape
    try:
        atomic_write_bytes(_entry(root, sha256, (height, width), channels), buffer.getvalue())
    except OSError:
        pass  # a full or read-only cache only costs speed
