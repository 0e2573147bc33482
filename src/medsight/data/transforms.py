"""Preprocessing and augmentation as torchvision transforms v2 on uint8 CHW tensors.

Input images are already decoded and resized (see :mod:`medsight.data.dataset`), so these work
on small tensors; the same :func:`eval_transform` is what a bundle applies when serving.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torchvision.transforms import v2

from medsight.config import AugmentConfig


def normalize(channels: int, mean: Sequence[float], std: Sequence[float]) -> v2.Transform:
    """uint8 -> float in [0, 1] -> (x - mean) / std, with one-value mean/std broadcast."""
    mean = list(mean) * channels if len(mean) == 1 else list(mean)
    std = list(std) * channels if len(std) == 1 else list(std)
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])


def _reach(aug: AugmentConfig, side: int) -> int:
    """Padding so that the affine never samples outside the padded image: the farthest a
    corner can land, for the largest rotation, zoom-out, shear and shift."""
    angle = math.radians(min(abs(aug.rotation), 45))
    spread = (math.cos(angle) + math.sin(angle)) / (1 - aug.zoom) + math.tan(
        math.radians(min(abs(aug.shear), 60))
    )
    return math.ceil(side / 2 * (spread - 1) + side * aug.shift) + 2


def eval_transform(channels: int, mean: Sequence[float], std: Sequence[float]) -> v2.Transform:
    return normalize(channels, mean, std)


def train_transform(
    aug: AugmentConfig,
    size: tuple[int, int],
    channels: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> v2.Transform:
    """Keras-style random affine + flips, then the eval normalisation.

    Keras fills pixels moved in from outside with the nearest edge pixel; torchvision's affine
    only fills a constant, so for ``fill: nearest`` the image is edge-padded first and cropped
    back to ``size`` afterwards.
    """
    steps: list[v2.Transform] = []
    if aug.rotation or aug.shear or aug.zoom or aug.shift:
        affine = v2.RandomAffine(
            degrees=aug.rotation,
            translate=(aug.shift, aug.shift) if aug.shift else None,
            scale=(1 - aug.zoom, 1 + aug.zoom) if aug.zoom else None,
            shear=aug.shear or None,
            interpolation=v2.InterpolationMode.BILINEAR,
        )
        if aug.fill == "nearest":
            pad = [_reach(aug, s) for s in size]
            steps += [v2.Pad([pad[1], pad[0]], padding_mode="edge"), affine, v2.CenterCrop(size)]
        else:
            steps.append(affine)
    if aug.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if aug.vflip:
        steps.append(v2.RandomVerticalFlip())
    if aug.brightness or aug.contrast:  # exposure differs between scanners and sites
        steps.append(
            v2.ColorJitter(brightness=aug.brightness or None, contrast=aug.contrast or None)
        )
    steps.append(normalize(channels, mean, std))
    return v2.Compose(steps)
