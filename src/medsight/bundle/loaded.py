"""A bundle loaded into PyTorch: its model behind the input pipeline, ready to predict."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from medsight.bundle.domain import DomainGuard
from medsight.bundle.pipeline import InputPipeline, PixelsToLogits, WithDomain
from medsight.bundle.predictor import Predictor
from medsight.bundle.spec import BundleSpec
from medsight.models.lungs import LungCrop


class Bundle(Predictor):
    """The model in eval mode, its spec, the network the spec describes (lung crop, exposure,
    normalisation, model, TTA) and its domain guard (None for bundles made before guards)."""

    engine = "torch"

    def __init__(
        self,
        model: nn.Module,
        spec: BundleSpec,
        lung_crop: LungCrop | None = None,
        guard: DomainGuard | None = None,
    ):
        self.model, self.spec, self.lung_crop = model.eval(), spec, lung_crop
        self.guard = guard.eval() if guard is not None and spec.domain is not None else None
        self.pipeline = InputPipeline.from_spec(spec, lung_crop)
        self.network = PixelsToLogits(self.pipeline, self.model, spec.tta).eval()

    def graph(self) -> nn.Module:
        """The module to export: pixels -> logits, or -> (logits, domain distance)."""
        return self.network if self.guard is None else WithDomain(self.network, self.guard).eval()

    def framed(self, pixels: np.ndarray) -> torch.Tensor:
        """(N, H, W, C) uint8 images resized to the spec -> the uint8 pixels the model sees
        (cropped to the lung field when the bundle crops), for display."""
        with torch.inference_mode():
            return self.pipeline.frame(_tensor(pixels))

    def to_input(self, pixels: np.ndarray) -> torch.Tensor:
        """(N, H, W, C) uint8 images resized to the spec -> the normalised model input (a
        tensor without history: Grad-CAM asks for its gradient)."""
        with torch.no_grad():
            return self.pipeline(_tensor(pixels))

    @torch.inference_mode()
    def outputs(
        self, pixels: np.ndarray, batch_size: int | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw (uncalibrated) logits, mirror-TTA averaged when the bundle uses TTA, and the
        domain guard's distances (None without a guard)."""

        def run(chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
            x = _tensor(chunk)
            logits = self.network(x).float().numpy()
            if self.guard is None:
                return logits, None
            return logits, self.guard(self.pipeline.frame(x)).float().numpy()

        return self._batches(pixels, batch_size, run)

    @torch.inference_mode()
    def logits(self, pixels: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Raw logits alone (the domain guard is not run)."""

        def run(chunk: np.ndarray) -> tuple[np.ndarray, None]:
            return self.network(_tensor(chunk)).float().numpy(), None

        return self._batches(pixels, batch_size, run)[0]


def _tensor(pixels: np.ndarray) -> torch.Tensor:
    """A tensor over ``pixels`` (copied only when they are not contiguous or not writable, as a
    decoded image's array is)."""
    return torch.from_numpy(np.require(pixels, requirements=["C", "W"]))
