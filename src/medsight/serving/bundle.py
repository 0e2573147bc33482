"""The model bundle: the one artefact that flows from training to evaluate, predict and serve.

A bundle folder holds ``model.safetensors`` (weights only: loading never unpickles code) and
``bundle.json`` (architecture, preprocessing, class names, positive class, decision threshold
and calibration temperature chosen on the validation split, evaluation summary) and
``model_card.md``. Nothing downstream needs the recipe again, so serving cannot drift from
training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ValidationError
from safetensors.torch import load_file, save_file

from medsight.data.transforms import eval_transform
from medsight.errors import MedsightError
from medsight.fsutil import atomic_dir
from medsight.models.lungs import WEIGHTS_FILE as LUNG_WEIGHTS
from medsight.models.lungs import LungCrop, LungSpec, lung_crop_from
from medsight.models.zoo import create_model

FORMAT_VERSION = 1


class BundleSpec(BaseModel):
    """Everything needed to rebuild the model and feed it images exactly as in training."""

    format_version: int = FORMAT_VERSION
    model_name: str
    model_kwargs: dict[str, Any] = {}
    class_names: list[str]
    positive_class: str | None = None
    image_size: tuple[int, int]
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    threshold: float = 0.5  # on the calibrated positive-class probability (binary bundles)
    threshold_rule: str = "fixed 0.5"  # how it was chosen, e.g. "youden" on the val split
    temperature: float = 1.0  # temperature scaling: calibrated = softmax(logits / temperature)
    tta: bool = False  # average the logits of the image and its horizontal mirror
    exposure: str = "none"  # "equalize": histogram-equalise each image before normalising
    # crop each image to its lung field first (the lung U-Net's weights: lungs.safetensors)
    lung_crop: LungSpec | None = None
    recipe: str | None = None
    metrics: dict[str, Any] = {}
    created: str = ""
    medsight_version: str = ""

    @property
    def positive_index(self) -> int | None:
        return self.class_names.index(self.positive_class) if self.positive_class else None


@dataclass
class Bundle:
    """A loaded bundle: the model in eval mode plus its spec."""

    model: torch.nn.Module
    spec: BundleSpec
    lung_crop: LungCrop | None = None

    def framed(self, pixels: np.ndarray) -> torch.Tensor:
        """(N, H, W, C) uint8 images resized to the spec -> the uint8 pixels the model sees
        (cropped to the lung field when the bundle crops), for display."""
        tensor = torch.from_numpy(np.ascontiguousarray(pixels))
        return tensor if self.lung_crop is None else self.lung_crop.crop_uint8(tensor)

    def to_input(self, pixels: np.ndarray) -> torch.Tensor:
        """(N, H, W, C) uint8 images already resized to the spec -> the normalised model input."""
        spec = self.spec
        transform = eval_transform(spec.channels, spec.mean, spec.std, spec.exposure)
        tensor = torch.from_numpy(np.ascontiguousarray(pixels))
        if self.lung_crop is not None:
            with torch.no_grad():
                tensor = self.lung_crop(tensor)  # float grey levels
            # equalising needs whole grey levels; otherwise keep the crop's exact values
            tensor = tensor.round().to(torch.uint8) if spec.exposure == "equalize" else tensor / 255
        return transform(tensor.permute(0, 3, 1, 2))

    @torch.inference_mode()
    def logits(self, pixels: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Raw (uncalibrated) logits for (N, H, W, C) uint8 images resized to the spec."""
        out = []
        for start in range(0, len(pixels), batch_size):
            batch = self.to_input(pixels[start : start + batch_size])
            logits = self.model(batch)
            if self.spec.tta:
                logits = (logits + self.model(batch.flip(3))) / 2
            out.append(logits.float().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.spec.class_names)))

    def predict_proba(
        self, pixels: np.ndarray, batch_size: int = 64, calibrated: bool = True
    ) -> np.ndarray:
        """Class probabilities (temperature-scaled unless ``calibrated=False``)."""
        temperature = self.spec.temperature if calibrated else 1.0
        return softmax(self.logits(pixels, batch_size), temperature)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` (numerically stable)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return (z / z.sum(axis=1, keepdims=True)).astype(np.float32)


def save_bundle(
    folder: Path,
    model: torch.nn.Module,
    spec: BundleSpec,
    card: str | None = None,
    lung_crop: LungCrop | None = None,
) -> Path:
    """Write a bundle (and its model card) atomically: a kill never leaves a half-written one."""
    from medsight import __version__

    spec = spec.model_copy(
        update={
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "medsight_version": __version__,
        }
    )
    with atomic_dir(folder) as tmp:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"))
        if lung_crop is not None:
            save_file(lung_crop.weights(), str(tmp / LUNG_WEIGHTS))
        (tmp / "bundle.json").write_text(json.dumps(spec.model_dump(mode="json"), indent=2))
        if card:
            (tmp / "model_card.md").write_text(card)
    return folder


def read_bundle(folder: str | Path) -> tuple[BundleSpec, dict[str, torch.Tensor], Path]:
    """A bundle's description and weights, without building its model (also accepts the run
    directory that holds ``bundle/``); returns the bundle folder too."""
    folder = Path(folder)
    if (folder / "bundle" / "bundle.json").is_file():
        folder = folder / "bundle"
    spec_file, weights = folder / "bundle.json", folder / "model.safetensors"
    if not spec_file.is_file() or not weights.is_file():
        raise MedsightError(
            f"{folder}: not a medsight bundle (expected bundle.json and "
            "model.safetensors; a training run writes one to RUN_DIR/bundle)"
        )
    try:
        spec = BundleSpec.model_validate_json(spec_file.read_text())
    except ValidationError as exc:
        raise MedsightError(f"{spec_file}: invalid bundle description: {exc}") from exc
    if spec.format_version > FORMAT_VERSION:
        raise MedsightError(
            f"{folder}: bundle format {spec.format_version} is newer than this "
            f"medsight understands ({FORMAT_VERSION}); upgrade medsight"
        )
    return spec, load_file(str(weights)), folder


def load_bundle(folder: str | Path) -> Bundle:
    """Load a bundle folder (or the run directory that holds ``bundle/``), ready to predict."""
    spec, state, folder = read_bundle(folder)
    model = create_model(
        spec.model_name,
        num_classes=len(spec.class_names),
        in_channels=spec.channels,
        image_size=spec.image_size,
        **spec.model_kwargs,
    )
    model.load_state_dict(state)
    lung_crop = None
    if spec.lung_crop is not None:
        if not (folder / LUNG_WEIGHTS).is_file():
            raise MedsightError(
                f"{folder}: the bundle crops to the lungs but {LUNG_WEIGHTS} is missing"
            )
        lung_crop = lung_crop_from(spec.lung_crop, load_file(str(folder / LUNG_WEIGHTS)))
    return Bundle(model.eval(), spec, lung_crop)
