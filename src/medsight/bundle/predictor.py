"""What every engine that runs a bundle offers: its spec, logits, and answers from them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medsight.bundle.spec import BundleSpec


@dataclass(frozen=True)
class Answers:
    """Calibrated probabilities and the domain check of a batch of images, rows aligned."""

    probs: np.ndarray
    domain_score: np.ndarray  # above 1: out of domain; NaN: the bundle has no domain guard

    @property
    def in_domain(self) -> np.ndarray:
        """True / False per image; None where the bundle cannot tell (no guard)."""
        return np.array(
            [None if np.isnan(s) else bool(s <= 1.0) for s in self.domain_score], dtype=object
        )


class Predictor:
    """The interface batch prediction, evaluation and serving use, whatever runs the model
    (PyTorch: :class:`~medsight.bundle.loaded.Bundle`; ONNX Runtime:
    :class:`~medsight.bundle.runtime.OnnxPredictor`). Subclasses give ``outputs``; probabilities,
    decisions and the domain score come from the spec."""

    spec: BundleSpec
    engine: str

    def outputs(
        self, pixels: np.ndarray, batch_size: int = 64
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw logits and the domain guard's distances (None without a guard) for (N, H, W, C)
        uint8 images resized to the spec's input size."""
        raise NotImplementedError

    def logits(self, pixels: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Raw logits for (N, H, W, C) uint8 images resized to the spec's input size."""
        return self.outputs(pixels, batch_size)[0]

    def predict_proba(
        self, pixels: np.ndarray, batch_size: int = 64, calibrated: bool = True
    ) -> np.ndarray:
        """Class probabilities (temperature-scaled unless ``calibrated=False``)."""
        return self.spec.probabilities(self.logits(pixels, batch_size), calibrated)

    def answer(self, pixels: np.ndarray, batch_size: int = 64) -> Answers:
        """Calibrated probabilities and domain scores in one pass."""
        logits, distances = self.outputs(pixels, batch_size)
        return Answers(
            self.spec.probabilities(logits), self.spec.domain_scores(distances, len(logits))
        )

    def _batches(
        self, pixels: np.ndarray, batch_size: int, run
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``run`` (-> logits, distances or None) over consecutive batches, outputs stacked."""
        parts = [run(pixels[i : i + batch_size]) for i in range(0, len(pixels), batch_size)]
        if not parts:
            empty = np.zeros((0, len(self.spec.class_names)), np.float32)
            return empty, None if self.spec.domain is None else np.zeros(0, np.float32)
        logits = np.concatenate([p[0] for p in parts])
        distances = None if parts[0][1] is None else np.concatenate([p[1] for p in parts])
        return logits, distances
