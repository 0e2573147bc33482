"""The input pipeline: one chain for training batches, the loaded bundle and the ONNX graph."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsight.bundle import BundleSpec, InputPipeline, PixelsToLogits
from medsight.config import AugmentConfig
from medsight.data.augment import BatchTransform
from medsight.data.dataset import ArrayDataset

SIZE = (32, 40)


def _pixels(n: int = 4, channels: int = 3, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, (n, *SIZE, channels), dtype=np.uint8))


@pytest.mark.parametrize(
    ("channels", "mean", "std"),
    [(3, (0.5,), (0.25,)), (3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), (1, (0.5,), (0.5,))],
)
def test_pixels_become_scaled_normalised_channels_first(channels, mean, std) -> None:
    pixels = _pixels(channels=channels)
    x = InputPipeline(channels, mean, std)(pixels)
    mean_t = torch.tensor(mean * channels if len(mean) == 1 else mean).view(1, -1, 1, 1)
    std_t = torch.tensor(std * channels if len(std) == 1 else std).view(1, -1, 1, 1)
    expected = (pixels.permute(0, 3, 1, 2).float() / 255 - mean_t) / std_t
    assert x.shape == (4, channels, *SIZE)
    torch.testing.assert_close(x, expected)


def test_identity_normalisation_is_plain_scaling() -> None:
    pixels = _pixels()
    x = InputPipeline(3, (0.0,), (1.0,))(pixels)
    assert torch.equal(x, pixels.permute(0, 3, 1, 2).float() / 255)


def test_training_batches_are_normalised_exactly_as_serving_normalises() -> None:
    pixels = _pixels(6).numpy()
    dataset = ArrayDataset(pixels, np.arange(6) % 2, seed=7)
    items = dataset.__getitems__([len(pixels) * 2 + i for i in range(6)])  # epoch 1 keys
    pipeline = InputPipeline(3, (0.5,), (0.25,))
    images, _ = BatchTransform()(items)
    served = pipeline(torch.from_numpy(pixels))
    assert torch.equal(pipeline.normalize(images), served)
    # an augmentation that changes nothing gives floats in [0, 1] that normalise the same
    unchanged, _ = BatchTransform(AugmentConfig())(items)
    assert unchanged.dtype == torch.float32
    torch.testing.assert_close(pipeline.normalize(unchanged), served)


def test_equalised_exposure_ignores_a_global_brightness_change() -> None:
    pixels = torch.from_numpy(
        np.random.default_rng(2).normal(120, 30, (2, *SIZE, 1)).clip(0, 255).astype(np.uint8)
    )
    darker = (pixels.float() * 0.7).round().to(torch.uint8)
    equalised = InputPipeline(1, (0.5,), (0.5,), exposure="equalize")
    assert (equalised(pixels) - equalised(darker)).abs().mean() < 0.05
    plain = InputPipeline(1, (0.5,), (0.5,))
    assert (plain(pixels) - plain(darker)).abs().mean() > 0.2
    # augmented floats are equalised on whole grey levels, as uint8 batches are
    as_float = pixels.permute(0, 3, 1, 2).float() / 255
    torch.testing.assert_close(equalised.normalize(as_float), equalised(pixels), atol=1e-6, rtol=0)


def test_mean_and_std_stay_out_of_the_state_dict() -> None:
    pipeline = InputPipeline(3, (0.5,), (0.25,))
    assert pipeline.state_dict() == {}  # the bundle's spec holds them
    spec = BundleSpec(
        model_name="malaria_lenet",
        class_names=["a", "b"],
        image_size=SIZE,
        channels=3,
        mean=(0.1, 0.2, 0.3),
        std=(0.4, 0.5, 0.6),
        exposure="equalize",
    )
    built = InputPipeline.from_spec(spec)
    assert built.equalize and built.mean.flatten().tolist() == pytest.approx([0.1, 0.2, 0.3])


class _Halves(torch.nn.Module):
    """Logits that tell an image from its mirror: left half minus right half."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        left, right = x[..., :half].mean((1, 2, 3)), x[..., half:].mean((1, 2, 3))
        return torch.stack([left - right, right - left], 1)


def test_tta_averages_the_image_and_its_mirror() -> None:
    pixels = _pixels()
    pixels[:, :, : SIZE[1] // 2] //= 4  # a dark left half
    pipeline = InputPipeline(3, (0.0,), (1.0,))
    plain = PixelsToLogits(pipeline, _Halves())(pixels)
    assert (plain[:, 1] > 0.2).all()
    averaged = PixelsToLogits(pipeline, _Halves(), tta=True)(pixels)
    torch.testing.assert_close(averaged, torch.zeros_like(averaged), atol=1e-6, rtol=0)
