"""The input pipeline: how decoded uint8 pixels become a model's input, and its logits.

One ``nn.Module`` chain, built from a bundle's spec in :meth:`InputPipeline.from_spec`:
lung crop → exposure (histogram equalisation) → scaling and ``(x - mean) / std``, then the
model, then mirror TTA (:class:`PixelsToLogits`). Training normalises its augmented batches with
the same module, the loaded bundle predicts with it and the ONNX export traces it, so the three
cannot drift. Decoding and the resize to the bundle's input size happen before, in one place
too (:func:`medsight.data.io.to_pixels`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.transforms.v2.functional import equalize

from medsight.bundle.spec import BundleSpec
from medsight.models.lungs import LungCrop


def per_channel(values: Sequence[float], channels: int) -> list[float]:
    """A mean or std as one value per channel (a single value is broadcast)."""
    return list(values) * channels if len(values) == 1 else list(values)


class InputPipeline(nn.Module):
    """uint8 (N, H, W, C) pixels, already resized to the bundle's input size -> the model's
    normalised float (N, C, H, W) input."""

    def __init__(
        self,
        channels: int,
        mean: Sequence[float],
        std: Sequence[float],
        exposure: str = "none",
        lung_crop: LungCrop | None = None,
    ):
        super().__init__()
        self.equalize, self.lung_crop = exposure == "equalize", lung_crop
        self.identity = all(m == 0 for m in mean) and all(s == 1 for s in std)
        # not in the state dict: the bundle stores mean and std in its spec
        shape = (1, -1, 1, 1)
        mean_t = torch.tensor(per_channel(mean, channels)).view(shape)
        std_t = torch.tensor(per_channel(std, channels)).view(shape)
        self.register_buffer("mean", mean_t, persistent=False)
        self.register_buffer("std", std_t, persistent=False)

    @classmethod
    def from_spec(cls, spec: BundleSpec, lung_crop: LungCrop | None = None) -> InputPipeline:
        """The pipeline a bundle's spec describes (``lung_crop``: its loaded lung model; None
        where the pixels are cropped already, as in training)."""
        return cls(spec.channels, spec.mean, spec.std, spec.exposure, lung_crop)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.lung_crop is not None:
            pixels = self.lung_crop(pixels)  # float grey levels in [0, 255], unrounded
            # equalising needs whole grey levels; otherwise the crop's exact values are kept
            pixels = pixels.round().to(torch.uint8) if self.equalize else pixels / 255.0
        return self.normalize(pixels.permute(0, 3, 1, 2))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) uint8 grey levels, or floats in [0, 1] (an augmented batch) ->
        equalised if the bundle says so -> [0, 1] -> ``(x - mean) / std``."""
        if self.equalize:
            x = equalize(x)  # floats are equalised on whole grey levels and stay in [0, 1]
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        return x if self.identity else (x - self.mean) / self.std

    def frame(self, pixels: torch.Tensor) -> torch.Tensor:
        """The uint8 (N, H, W, C) pixels the model sees (cropped to the lung field when the
        pipeline crops), for display."""
        return pixels if self.lung_crop is None else self.lung_crop.crop_uint8(pixels)


class WithDomain(nn.Module):
    """uint8 pixels -> (logits, domain distance): the network and the domain guard, which looks
    at the image as the model sees it (lung-cropped when the bundle crops)."""

    def __init__(self, network: PixelsToLogits, guard: nn.Module):
        super().__init__()
        self.network, self.guard = network, guard

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.network(pixels), self.guard(self.network.pipeline.frame(pixels))


class PixelsToLogits(nn.Module):
    """uint8 (N, H, W, C) pixels -> the pipeline -> the model -> logits, averaged with the
    mirror image's when the bundle uses TTA."""

    def __init__(self, pipeline: InputPipeline, model: nn.Module, tta: bool = False):
        super().__init__()
        self.pipeline, self.model, self.tta = pipeline, model, tta

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.pipeline(pixels)
        if not self.tta:
            return self.model(x)
        # one pass over image and mirror stacked: one copy of each layer in an exported graph
        # (the int8 quantiser transposes a weight shared by two Gemm nodes twice)
        both = self.model(torch.cat([x, x.flip(3)]))
        return (both[: x.shape[0]] + both[x.shape[0] :]) / 2
