"""Training augmentation on whole batches: one ``grid_sample`` call instead of one affine per image.

Keras' ImageDataGenerator moves every image on its own; done per image in torchvision this cost
about 0.9 ms per 128 px cell, more than the LeNet step itself. Here each image's random affine
(rotation, shear, zoom, shift, mirror) becomes one row of a batched sampling grid, brightness and
contrast are per-image factors and blur a per-image Gaussian, so a batch of 32 costs a few
milliseconds. ``padding_mode "border"`` repeats the edge pixel, which is exactly Keras'
``fill_mode='nearest'``.

Each image's draws come from its own seed (see :class:`medsight.data.dataset.ArrayDataset`), so
resumed, multi-worker and multi-process runs augment an image in an epoch the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from medsight.config import AugmentConfig

GRAY = (0.2989, 0.587, 0.114)  # luma weights, as torchvision's contrast adjustment
# the columns of a parameter row
PARAMS = (
    "angle",
    "shift_x",
    "shift_y",
    "scale",
    "shear",
    "hflip",
    "vflip",
    "brightness",
    "contrast",
    "blur",
)
ANGLE, SHIFT_X, SHIFT_Y, SCALE, SHEAR, HFLIP, VFLIP, BRIGHTNESS, CONTRAST, BLUR = range(len(PARAMS))


def draw(aug: AugmentConfig, seeds: Sequence[int], size: tuple[int, int]) -> torch.Tensor:
    """Per-image parameters (the :data:`PARAMS` columns), one row per seed; shifts in pixels,
    angles in degrees, flips 0 or 1, brightness and contrast as factors, blur as a Gaussian sigma
    in pixels."""
    height, width = size
    rows = []
    for seed in seeds:
        generator = torch.Generator().manual_seed(int(seed))
        u = 2 * torch.rand(len(PARAMS), generator=generator, dtype=torch.float64) - 1
        rows.append(
            [
                aug.rotation * u[ANGLE],
                round(float(aug.shift * width * u[SHIFT_X])),
                round(float(aug.shift * height * u[SHIFT_Y])),
                1 + aug.zoom * u[SCALE],
                aug.shear * u[SHEAR],
                float(aug.hflip and u[HFLIP] > 0),
                float(aug.vflip and u[VFLIP] > 0),
                1 + aug.brightness * u[BRIGHTNESS],
                1 + aug.contrast * u[CONTRAST],
                aug.blur * (1 + u[BLUR]) / 2,
            ]
        )
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, len(PARAMS))


def sampling_grid(params: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The ``grid_sample`` grid that applies each row's affine as torchvision's ``affine`` does
    (about the image centre; output pixel -> input pixel), then the flips."""
    height, width = size
    angle, shear = torch.deg2rad(params[:, ANGLE]), torch.deg2rad(params[:, SHEAR])
    shift, scale = params[:, SHIFT_X : SHIFT_Y + 1], params[:, SCALE]
    # rotation @ x-shear (torchvision's RotateScaleShear with no y-shear), then its inverse
    a, b = torch.cos(angle), -torch.cos(angle) * torch.tan(shear) - torch.sin(angle)
    c, d = torch.sin(angle), -torch.sin(angle) * torch.tan(shear) + torch.cos(angle)
    inverse = torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2)
    inverse = inverse / scale[:, None, None]
    offset = -(inverse @ shift[:, :, None])
    # centred pixel coordinates -> grid_sample's [-1, 1] coordinates
    half = torch.tensor([width / 2, height / 2], dtype=torch.float64, device=params.device)
    linear = inverse * half[None, None, :] / half[None, :, None]
    theta = torch.cat([linear, offset / half[None, :, None]], dim=2)
    theta[params[:, HFLIP].bool(), :, 0] *= -1  # sample at -x: the output is mirrored
    theta[params[:, VFLIP].bool(), :, 1] *= -1
    return F.affine_grid(theta.float(), [len(params), 1, height, width], align_corners=False)


def augment_batch(images: torch.Tensor, params: torch.Tensor, aug: AugmentConfig) -> torch.Tensor:
    """uint8 or [0, 1] float (N, C, H, W) -> augmented float in [0, 1]."""
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    size = (x.shape[-2], x.shape[-1])
    if aug.rotation or aug.shear or aug.zoom or aug.shift or aug.hflip or aug.vflip:
        padding = "border" if aug.fill == "nearest" else "zeros"
        grid = sampling_grid(params, size)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)
    if aug.brightness:
        x = (x * params[:, BRIGHTNESS, None, None, None].float()).clamp(0, 1)
    if aug.contrast:
        gray = x.mean(1, keepdim=True) if x.shape[1] == 1 else _gray(x)
        mean = gray.mean((1, 2, 3), keepdim=True)
        factor = params[:, CONTRAST, None, None, None].float()
        x = (factor * x + (1 - factor) * mean).clamp(0, 1)
    if aug.blur:
        x = gaussian_blur(x, params[:, BLUR])
    return x


def gaussian_blur(x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Blur each image with its own Gaussian sigma (pixels; 0 leaves it unchanged): two grouped
    1-D convolutions for the whole batch, edges reflected."""
    n, channels, height, width = x.shape
    radius = max(1, math.ceil(3 * float(sigmas.max())))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64, device=sigmas.device)
    spread = sigmas.clamp_min(1e-6)[:, None]
    kernels = torch.exp(-0.5 * (offsets[None, :] / spread) ** 2)
    kernels = (kernels / kernels.sum(1, keepdim=True)).float().repeat_interleave(channels, 0)
    y = F.pad(x.reshape(1, n * channels, height, width), (radius,) * 4, mode="reflect")
    y = F.conv2d(y, kernels[:, None, None, :], groups=n * channels)
    y = F.conv2d(y, kernels[:, None, :, None], groups=n * channels)
    return y.reshape(n, channels, height, width)


def _gray(x: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor(GRAY, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(1, keepdim=True)


class BatchTransform:
    """The DataLoader's ``collate_fn``: a batch of uint8 images, augmented (floats in [0, 1])
    when training, as they are otherwise. The model's input pipeline
    (:class:`medsight.bundle.InputPipeline`) normalises either, as the bundle does when
    serving.

    ``on_device``: only draw each image's parameters here and return ``(uint8 images, labels,
    params)``; :func:`augment_on_device` applies them after the batch reached the GPU, so the
    loader's CPU workers copy uint8 (a quarter of the bytes) and never warp pixels."""

    def __init__(self, aug: AugmentConfig | None = None, on_device: bool = False):
        self.aug, self.on_device = aug, on_device

    def __call__(self, batch: tuple[torch.Tensor, torch.Tensor, list[int]]) -> tuple:
        """``batch``: what :meth:`ArrayDataset.__getitems__` returns."""
        images, labels, seeds = batch
        if self.aug is None:
            return images, labels
        params = draw(self.aug, seeds, (images.shape[-2], images.shape[-1]))
        if self.on_device:
            return images, labels, params
        return augment_batch(images, params, self.aug), labels


def augment_on_device(batch: tuple, aug: AugmentConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch from ``BatchTransform(aug, on_device=True)``, moved to its device, augmented
    there exactly as the CPU path would (the same drawn parameters); other batches unchanged."""
    if len(batch) != 3:
        return batch
    images, labels, params = batch
    return augment_batch(images, params, aug), labels
