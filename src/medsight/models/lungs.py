"""Lung-field cropping: a small U-Net finds the lungs and every X-ray is cropped to them.

Why: in Kermany's data the classes differ in framing (training normals show neck and shoulders,
pneumonia images are tightly collimated), and a classifier learns the framing instead of the
lungs (docs/experiments/pneumonia.md). Cropping every image to its lung field, in training and
serving alike, takes that shortcut away.

The crop is part of the model: :class:`LungCrop` maps uint8 NHWC pixels to the cropped pixels
of the same size with tensor operations only, so a bundle, its ONNX export and the server all
crop the same way. The U-Net is segmentation_models_pytorch's, on an EfficientNet-Lite0 encoder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from medsight.data.store import PixelStore, map_store
from medsight.errors import ConfigError, MedsightError
from medsight.fsutil import atomic_dir
from medsight.models.lung_spec import LungSpec
from medsight.progress import Progress

SPEC_FILE, WEIGHTS_FILE = "lungs.json", "lungs.safetensors"


def build_segmenter(spec: LungSpec) -> nn.Module:
    """The U-Net, untrained (one output channel: lung logits)."""
    try:
        import segmentation_models_pytorch as smp
    except ImportError as exc:
        raise ConfigError(
            "lung cropping needs segmentation-models-pytorch: pip install 'medsight[lungs]'"
        ) from exc
    return smp.Unet(spec.encoder, encoder_weights=None, in_channels=3, classes=1)


def segmenter_input(x: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) floats in [0, 1] -> the U-Net's input: grey, size x size, scaled to [-1, 1]
    (EfficientNet-Lite's mean = std = 0.5). Training and cropping both use it."""
    grey = x.mean(1, keepdim=True)
    grey = F.interpolate(grey, size=(size, size), mode="bilinear", align_corners=False)
    return ((grey - 0.5) / 0.5).expand(-1, 3, -1, -1)


class LungCrop(nn.Module):
    """uint8 NHWC pixels -> the same pixels cropped to the lung field and resized back, as
    float grey levels in [0, 255]. Not rounded: rounding to whole levels would turn the last-bit
    differences between PyTorch and an ONNX runtime into whole grey levels."""

    def __init__(self, segmenter: nn.Module, spec: LungSpec):
        super().__init__()
        self.segmenter, self.spec = segmenter.eval(), spec

    def weights(self) -> dict[str, torch.Tensor]:
        """The U-Net's tensors, ready for safetensors."""
        return {k: v.detach().contiguous() for k, v in self.segmenter.state_dict().items()}

    @torch.inference_mode()
    def crop_store(self, pixels: PixelStore | np.ndarray, batch_size: int = 64) -> PixelStore:
        """Crop a run's decoded (N, H, W, C) uint8 images a batch at a time into a scratch
        store, so that the crop never holds the whole set in memory."""
        with Progress(len(pixels), "lung crop", "img") as bar:

            def crop(batch: np.ndarray) -> np.ndarray:
                bar.update(len(batch))
                return self.crop_uint8(torch.from_numpy(batch)).numpy()

            return map_store(pixels, crop, batch_size)

    def boxes(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) floats in [0, 1] -> (N, 4) boxes (top, bottom, left, right) as
        fractions of the image; the whole image where no lungs were found."""
        spec = self.spec
        lungs = (self.segmenter(segmenter_input(x, spec.size)) > 0).float()[:, 0]
        total = lungs.sum((1, 2))
        rows, cols = lungs.sum(2).cumsum(1), lungs.sum(1).cumsum(1)
        low, high = (spec.tail * total)[:, None], ((1 - spec.tail) * total)[:, None]
        # first row (column) past the low tail, last one before the high tail
        top, bottom = (rows <= low).sum(1), (rows < high).sum(1) + 1
        left, right = (cols <= low).sum(1), (cols < high).sum(1) + 1
        box = torch.stack([top, bottom, left, right], 1).float() / spec.size
        height, width = box[:, 1] - box[:, 0], box[:, 3] - box[:, 2]
        grow = torch.stack([-height, height, -width, width], 1) * spec.margin
        box = (box + grow).clamp(0, 1)
        area = (box[:, 1] - box[:, 0]).clamp(min=0) * (box[:, 3] - box[:, 2]).clamp(min=0)
        whole = torch.tensor([0.0, 1.0, 0.0, 1.0]).expand_as(box)
        return torch.where((area >= spec.min_area)[:, None], box, whole)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.permute(0, 3, 1, 2).float() / 255.0
        top, bottom, left, right = self.boxes(x).unbind(1)
        zero = torch.zeros_like(top)
        # affine_grid maps the output's [-1, 1] square onto the box in the input's coordinates
        theta = torch.stack(
            [
                torch.stack([right - left, zero, left + right - 1], 1),
                torch.stack([zero, bottom - top, top + bottom - 1], 1),
            ],
            1,
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return (out * 255.0).clamp(0, 255).permute(0, 2, 3, 1)

    @torch.inference_mode()
    def crop_uint8(self, pixels: torch.Tensor) -> torch.Tensor:
        """The crop rounded to uint8 pixels (for storage and for display)."""
        return self(pixels).round().to(torch.uint8)


def save_lungs(folder: Path, crop: LungCrop) -> Path:
    """Write a lung model folder (weights + spec) atomically."""
    with atomic_dir(folder) as tmp:
        save_file(crop.weights(), str(tmp / WEIGHTS_FILE))
        (tmp / SPEC_FILE).write_text(json.dumps(crop.spec.model_dump(mode="json"), indent=2))
    return folder


def load_lungs(folder: str | Path) -> LungCrop:
    """A lung model folder (``RUN/lungs`` or a bundle that crops) -> :class:`LungCrop`."""
    folder = Path(folder)
    spec_file, weights = folder / SPEC_FILE, folder / WEIGHTS_FILE
    if not spec_file.is_file() or not weights.is_file():
        raise MedsightError(
            f"{folder}: not a lung model (expected {SPEC_FILE} and {WEIGHTS_FILE}; a run with "
            "preprocess.lung_crop writes one to RUN_DIR/lungs)"
        )
    spec = LungSpec.model_validate_json(spec_file.read_text())
    return lung_crop_from(spec, load_file(str(weights)))


def lung_crop_from(spec: LungSpec, state: dict[str, torch.Tensor]) -> LungCrop:
    segmenter = build_segmenter(spec)
    segmenter.load_state_dict(state)
    return LungCrop(segmenter, spec)
