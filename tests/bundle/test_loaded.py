"""The loaded bundle: the spec's pipeline, TTA and temperature applied to real logits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from medsight.bundle import BundleSpec, load_bundle, save_bundle
from medsight.models.zoo import create_model


def _spec() -> BundleSpec:
    return BundleSpec(
        model_name="malaria_lenet",
        class_names=["Parasitized", "Uninfected"],
        positive_class="Parasitized",
        image_size=(64, 64),
        channels=3,
        mean=(0.0,),
        std=(1.0,),
        threshold=0.4,
    )


def test_tta_averages_the_logits_of_the_image_and_its_mirror(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = create_model("malaria_lenet", 2, 3, (64, 64)).eval()
    save_bundle(tmp_path / "b", model, _spec().model_copy(update={"tta": True}))
    bundle = load_bundle(tmp_path / "b")
    pixels = np.random.default_rng(1).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2) / 255.0
    with torch.no_grad():
        expected = torch.softmax((model(x) + model(x.flip(3))) / 2, 1)
        plain = torch.softmax(model(x), 1)
    got = bundle.predict_proba(pixels)
    assert np.allclose(got, expected.numpy(), atol=1e-6)
    assert not np.allclose(got, plain.numpy(), atol=1e-4)


def test_temperature_scales_the_logits_and_keeps_the_ranking(tmp_path: Path) -> None:
    torch.manual_seed(2)
    model = create_model("malaria_lenet", 2, 3, (64, 64)).eval()
    save_bundle(tmp_path / "b", model, _spec().model_copy(update={"temperature": 2.0}))
    bundle = load_bundle(tmp_path / "b")
    pixels = np.random.default_rng(2).integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
    with torch.no_grad():
        logits = model(torch.from_numpy(pixels).permute(0, 3, 1, 2) / 255.0)
    calibrated, raw = bundle.predict_proba(pixels), bundle.predict_proba(pixels, calibrated=False)
    assert np.allclose(calibrated, torch.softmax(logits / 2.0, 1).numpy(), atol=1e-6)
    assert np.allclose(raw, torch.softmax(logits, 1).numpy(), atol=1e-6)
    assert (np.argsort(calibrated[:, 1]) == np.argsort(raw[:, 1])).all()
    assert np.abs(calibrated - 0.5).max() < np.abs(raw - 0.5).max()
