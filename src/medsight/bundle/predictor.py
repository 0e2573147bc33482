"""What every engine that runs a bundle offers: its spec, logits, and probabilities from them."""

from __future__ import annotations

import numpy as np

from medsight.bundle.spec import BundleSpec


class Predictor:
    """The interface batch prediction, evaluation and serving use, whatever runs the model
    (PyTorch: :class:`~medsight.bundle.loaded.Bundle`; ONNX Runtime:
    :class:`~medsight.bundle.runtime.OnnxPredictor`). Subclasses give ``logits``; probabilities
    and decisions come from the spec."""

    spec: BundleSpec
    engine: str

    def logits(self, pixels: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Raw logits for (N, H, W, C) uint8 images resized to the spec's input size."""
        raise NotImplementedError

    def predict_proba(
        self, pixels: np.ndarray, batch_size: int = 64, calibrated: bool = True
    ) -> np.ndarray:
        """Class probabilities (temperature-scaled unless ``calibrated=False``)."""
        return self.spec.probabilities(self.logits(pixels, batch_size), calibrated)

    def _batches(self, pixels: np.ndarray, batch_size: int, run) -> np.ndarray:
        """``run`` over consecutive batches of ``pixels``, the outputs stacked."""
        out = [run(pixels[i : i + batch_size]) for i in range(0, len(pixels), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, len(self.spec.class_names)))
