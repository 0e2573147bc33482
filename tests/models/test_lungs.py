"""Lung cropping: the box rule, the crop itself, and bundles that carry a lung model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from medsight.errors import MedsightError
from medsight.models.lung_spec import LungSpec
from medsight.models.lungs import LungCrop, load_lungs, save_lungs

SIZE = 128


class FixedLungs(nn.Module):
    """A stand-in segmenter: 'lungs' in a fixed box (fractions top, bottom, left, right)."""

    def __init__(self, box: tuple[float, float, float, float] | None):
        super().__init__()
        self.box = box
        self.weight = nn.Parameter(torch.zeros(1))  # something to save

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.full((x.shape[0], 1, SIZE, SIZE), -5.0)
        if self.box is not None:
            top, bottom, left, right = (round(v * SIZE) for v in self.box)
            out[:, :, top:bottom, left:right] = 5.0
        return out


def _pixels(n: int = 2, size: int = 64, channels: int = 3) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8)


def test_the_box_is_the_lung_extent_widened_by_the_margin() -> None:
    crop = LungCrop(FixedLungs((0.25, 0.75, 0.125, 0.875)), LungSpec(margin=0.1, tail=0.0))
    x = torch.from_numpy(_pixels()).permute(0, 3, 1, 2).float() / 255
    box = crop.boxes(x)
    # height 0.5 and width 0.75 grow by 10 % on each side
    expected = torch.tensor([0.2, 0.8, 0.05, 0.95]).expand(2, 4)
    assert torch.allclose(box, expected, atol=1e-6)


def test_the_crop_is_the_box_region_resized_to_the_input_size() -> None:
    pixels = np.zeros((1, 64, 64, 1), dtype=np.uint8)
    pixels[0, :32, :, 0] = 200  # top half bright, bottom half dark
    crop = LungCrop(FixedLungs((0.0, 0.5, 0.0, 1.0)), LungSpec(margin=0.0, tail=0.0))
    out = crop.crop_uint8(torch.from_numpy(pixels)).numpy()
    assert out.shape == pixels.shape and out.dtype == np.uint8
    # the box holds only the top half: the crop is bright all over (edge row blends at most)
    assert (out[0, 1:-1, :, 0] == 200).all()


@pytest.mark.parametrize("box", [None, (0.5, 0.55, 0.5, 0.55)], ids=["no lungs", "tiny"])
def test_without_a_believable_lung_field_the_image_is_left_whole(box) -> None:
    crop = LungCrop(FixedLungs(box), LungSpec())
    pixels = _pixels()
    with torch.no_grad():
        out = crop(torch.from_numpy(pixels)).numpy()
    assert np.allclose(out, pixels, atol=1e-3)  # the identity crop, up to float rounding


def test_a_lung_model_folder_round_trips(tmp_path: Path) -> None:
    pytest.importorskip("segmentation_models_pytorch", reason="pip install medsight[lungs]")
    from medsight.models.lungs import build_segmenter

    torch.manual_seed(0)
    spec = LungSpec(val_dice=0.9, trained_on="test")
    crop = LungCrop(build_segmenter(spec), spec)
    save_lungs(tmp_path / "lungs", crop)
    again = load_lungs(tmp_path / "lungs")
    assert again.spec == spec
    pixels = torch.from_numpy(_pixels(size=96))
    with torch.no_grad():
        assert torch.equal(crop(pixels), again(pixels))


def test_a_folder_without_a_lung_model_is_named(tmp_path: Path) -> None:
    with pytest.raises(MedsightError, match=str(tmp_path)):
        load_lungs(tmp_path)


@pytest.fixture(scope="module")
def lung_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small seeded bundle that crops to the lungs with a (random) U-Net."""
    pytest.importorskip("segmentation_models_pytorch", reason="pip install medsight[lungs]")
    from medsight.bundle import BundleSpec, save_bundle
    from medsight.models.lungs import build_segmenter
    from medsight.models.zoo import create_model

    torch.manual_seed(0)
    lungs = LungCrop(build_segmenter(LungSpec()), LungSpec(min_area=0.0))
    spec = BundleSpec(
        model_name="malaria_lenet",
        class_names=["NORMAL", "PNEUMONIA"],
        positive_class="PNEUMONIA",
        image_size=(64, 64),
        channels=3,
        mean=(0.5,),
        std=(0.5,),
        lung_crop=lungs.spec,
    )
    model = create_model(spec.model_name, 2, 3, spec.image_size)
    return save_bundle(tmp_path_factory.mktemp("b") / "lung", model, spec, lung_crop=lungs)


def test_a_bundle_crops_before_the_model_sees_the_image(lung_bundle: Path) -> None:
    from medsight.bundle import load_bundle

    bundle = load_bundle(lung_bundle)
    assert bundle.lung_crop is not None
    pixels = _pixels(n=3)
    cropped = bundle.framed(pixels).numpy()
    assert cropped.shape == pixels.shape and not np.array_equal(cropped, pixels)
    # the model's input is the crop's (rounded here to whole grey levels: at most half a level
    # apart, which std 0.5 doubles), not the raw image's
    plain = type(bundle)(bundle.model, bundle.spec)
    seen = bundle.to_input(pixels)
    assert (seen - plain.to_input(cropped)).abs().max() <= 1 / 255 + 1e-6
    assert (seen - plain.to_input(pixels)).abs().max() > 0.5


def test_a_bundle_missing_its_lung_weights_says_so(lung_bundle: Path, tmp_path: Path) -> None:
    import shutil

    from medsight.bundle import load_bundle

    broken = shutil.copytree(lung_bundle, tmp_path / "broken")
    (broken / "lungs.safetensors").unlink()
    with pytest.raises(MedsightError, match="lungs.safetensors"):
        load_bundle(broken)


def test_the_onnx_export_crops_as_the_bundle_does(lung_bundle: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from medsight.bundle import OnnxPredictor, load_bundle
    from medsight.serving.export import export_onnx

    predictor = OnnxPredictor(export_onnx(lung_bundle, tmp_path / "model.onnx"))
    pixels = _pixels(n=4)
    expected = load_bundle(lung_bundle).logits(pixels)
    assert np.allclose(predictor.logits(pixels), expected, atol=1e-3)


def test_grad_cam_of_a_cropping_bundle_lies_on_the_crop(lung_bundle: Path) -> None:
    from medsight.bundle import load_bundle
    from medsight.explanation.cam import explain, overlay_image

    bundle = load_bundle(lung_bundle)
    pixels = _pixels(n=1)[0]
    found = explain(bundle, pixels, score_faithfulness=False)
    cropped = bundle.framed(pixels[None])[0].numpy()
    assert np.array_equal(found.overlay, overlay_image(cropped, found.heatmap))
    assert not np.array_equal(found.overlay, overlay_image(pixels, found.heatmap))


def test_the_model_card_says_the_images_are_cropped() -> None:
    from medsight.bundle import BundleSpec
    from medsight.evaluation.card import model_card

    plain = BundleSpec(
        model_name="m", class_names=["a", "b"], image_size=(8, 8), channels=3, mean=(0,), std=(1,)
    )
    cropping = plain.model_copy(update={"lung_crop": LungSpec(val_dice=0.91, trained_on="t")})
    assert "lung field" not in model_card(plain, {})
    assert "Dice 0.910" in model_card(cropping, {})
