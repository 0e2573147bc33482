"""The preprocessing a bundle applies to every image, in training and when serving.

Images are already decoded and resized (see :mod:`medsight.data.dataset`); training adds its
random augmentation before this (:mod:`medsight.data.augment`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2


def eval_transform(
    channels: int, mean: Sequence[float], std: Sequence[float], exposure: str = "none"
) -> v2.Transform:
    """uint8 (or [0, 1] float) NCHW or CHW -> histogram-equalised if ``exposure`` says so ->
    float in [0, 1] -> ``(x - mean) / std``, with a one-value mean/std broadcast."""
    mean = list(mean) * channels if len(mean) == 1 else list(mean)
    std = list(std) * channels if len(std) == 1 else list(std)
    steps: list[v2.Transform] = [v2.RandomEqualize(p=1.0)] if exposure == "equalize" else []
    return v2.Compose([*steps, v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
