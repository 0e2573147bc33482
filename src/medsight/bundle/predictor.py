"""What every engine that runs a bundle offers: its spec, logits, and answers from them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medsight.bundle.spec import BundleSpec

# One model call takes at most this many input pixels unless asked for more: a call's
# activations grow with its batch (VGG16 on 64 images of 224 x 224 peaked at 4.2 GB) while the
# throughput stops growing long before (16 images: 1.3 GB and 6 % slower; benchmarks/RESULTS.md,
# "Prediction memory of the big models")
PIXELS_PER_CALL = 16 * 224 * 224


def default_batch_size(image_size: tuple[int, int] | list[int]) -> int:
    """Images per model call for this input size: 16 at 224 x 224, at most 64 for small ones."""
    height, width = image_size
    return max(1, min(64, PIXELS_PER_CALL // (height * width)))


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
        self, pixels: np.ndarray, batch_size: int | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw logits and the domain guard's distances (None without a guard) for (N, H, W, C)
        uint8 images resized to the spec's input size, ``batch_size`` images per model call
        (None: :func:`default_batch_size`)."""
        raise NotImplementedError

    def logits(self, pixels: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Raw logits for (N, H, W, C) uint8 images resized to the spec's input size."""
        return self.outputs(pixels, batch_size)[0]

    def predict_proba(
        self, pixels: np.ndarray, batch_size: int | None = None, calibrated: bool = True
    ) -> np.ndarray:
        """Class probabilities (temperature-scaled unless ``calibrated=False``)."""
        return self.spec.probabilities(self.logits(pixels, batch_size), calibrated)

    def answer(self, pixels: np.ndarray, batch_size: int | None = None) -> Answers:
        """Calibrated probabilities and domain scores in one pass."""
        logits, distances = self.outputs(pixels, batch_size)
        return Answers(
            self.spec.probabilities(logits), self.spec.domain_scores(distances, len(logits))
        )

    def _batches(
        self, pixels: np.ndarray, batch_size: int | None, run
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``run`` (-> logits, distances or None) over consecutive batches, outputs stacked.
        None: as few calls as :func:`default_batch_size` allows, of even sizes (64 images at
        49 per call: 2 x 32, not 49 + 15)."""
        if batch_size is None:
            calls = -(-len(pixels) // default_batch_size(self.spec.image_size))
            batch_size = -(-len(pixels) // max(calls, 1)) or 1
        parts = [run(pixels[i : i + batch_size]) for i in range(0, len(pixels), batch_size)]
        if not parts:
            empty = np.zeros((0, len(self.spec.class_names)), np.float32)
            return empty, None if self.spec.domain is None else np.zeros(0, np.float32)
        logits = np.concatenate([p[0] for p in parts])
        distances = None if parts[0][1] is None else np.concatenate([p[1] for p in parts])
        return logits, distances
