"""Grad-CAM explanations: the right layer for every model, a planted lesion lights up, overlays
keep the image's size, and the model is left as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsight.bundle import Bundle, BundleSpec
from medsight.errors import MedsightError
from medsight.explanation import METHOD_NAMES, METHODS, explain
from medsight.explanation.cam import find_layer, road_score
from medsight.models.zoo import REGISTRY, create_model

SIZE, RADIUS = 64, 5


def _bundle(name: str, size: int = SIZE, channels: int = 3, **spec: object) -> Bundle:
    torch.manual_seed(0)
    fields = {"class_names": ["NORMAL", "PNEUMONIA"], "positive_class": "PNEUMONIA", **spec}
    return Bundle(
        create_model(name, 2, channels, (size, size)).eval(),
        BundleSpec(
            model_name=name,
            image_size=(size, size),
            channels=channels,
            mean=(0.5,),
            std=(0.25,),
            **fields,
        ),
    )


def _noise(size: int = SIZE, channels: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, channels), dtype=np.uint8)


@pytest.mark.parametrize(
    ("name", "size", "layer"),
    [
        ("malaria_lenet", SIZE, "features"),
        ("covid_scratch_cnn", SIZE, "features"),
        ("kermany_cnn", SIZE, "features"),
        ("vgg16_tutorial_head", 128, "base.features"),
        ("resnet18", SIZE, "layer4"),
    ],
)
def test_target_layer_chosen_for_every_model(name: str, size: int, layer: str) -> None:
    bundle = _bundle(name, size)
    found = explain(bundle, _noise(size), score_faithfulness=False)  # scored in tests below
    assert found.layer == layer
    assert found.heatmap.shape == (size, size) and found.heatmap.dtype == np.float32
    assert 0 <= found.heatmap.min() and found.heatmap.max() <= 1
    assert found.overlay.shape == (size, size, 3) and found.overlay.dtype == np.uint8


def test_every_registry_model_is_covered() -> None:
    covered = {"malaria_lenet", "covid_scratch_cnn", "kermany_cnn", "vgg16_tutorial_head"}
    assert covered == set(REGISTRY)


def test_wrong_layer_name_lists_the_usable_layers() -> None:
    bundle = _bundle("malaria_lenet")
    with pytest.raises(MedsightError, match=r"'features\.99'.*no such module.*features\.6"):
        explain(bundle, _noise(), layer="features.99")
    with pytest.raises(MedsightError, match="not a usable map"):
        explain(bundle, _noise(), layer="classifier.1")
    assert explain(bundle, _noise(), layer="features.5").layer == "features.5"


def test_a_layer_changed_in_place_afterwards_is_passed_over() -> None:
    # resnet18's conv2 output is changed in place by the residual add + ReLU(inplace=True)
    bundle = _bundle("resnet18")
    with pytest.raises(MedsightError, match="not a usable map"):
        find_layer(bundle, "layer4.1.bn2")


def _lesions(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dim noise; class 1 has a bright disc at a random place. Returns pixels, labels, discs."""
    pixels = rng.integers(0, 90, (n, SIZE, SIZE, 1), dtype=np.uint8)
    labels = rng.integers(0, 2, n)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    discs = np.zeros((n, SIZE, SIZE), dtype=bool)
    for i in range(n):
        cy, cx = rng.integers(RADIUS + 2, SIZE - RADIUS - 2, 2)
        discs[i] = (yy - cy) ** 2 + (xx - cx) ** 2 <= RADIUS**2
        if labels[i]:
            pixels[i, discs[i], 0] = 255
    return pixels, labels, discs


@pytest.fixture(scope="module")
def lesion_bundle() -> Bundle:
    """malaria_lenet trained for a few seconds to find a bright disc anywhere in the image."""
    bundle = _bundle(
        "malaria_lenet", channels=1, class_names=["clear", "lesion"], positive_class="lesion"
    )
    pixels, labels, _ = _lesions(192, np.random.default_rng(0))
    x, y = bundle.to_input(pixels), torch.from_numpy(labels)
    optimiser = torch.optim.Adam(bundle.model.parameters(), 3e-3)
    bundle.model.train()
    for _ in range(5):
        for idx in torch.randperm(len(x)).split(32):
            loss = torch.nn.functional.cross_entropy(bundle.model(x[idx]), y[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    bundle.model.eval()
    test, truth, _ = _lesions(64, np.random.default_rng(1))
    accuracy = (bundle.predict_proba(test).argmax(1) == truth).mean()
    assert accuracy > 0.9, f"the lesion detector did not learn (accuracy {accuracy:.2f})"
    return bundle


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "scorecam", "layercam"])
def test_planted_lesion_is_highlighted(lesion_bundle: Bundle, method: str) -> None:
    pixels, labels, discs = _lesions(12, np.random.default_rng(2))
    for image, disc in zip(pixels[labels == 1][:4], discs[labels == 1][:4], strict=True):
        found = explain(lesion_bundle, image, method=method, score_faithfulness=False)
        assert found.target_class == "lesion"
        inside, outside = found.heatmap[disc].mean(), found.heatmap[~disc].mean()
        assert inside > 3 * outside, f"lesion {inside:.3f} vs background {outside:.3f}"


def test_faithfulness_prefers_the_real_map_to_its_inverse(lesion_bundle: Bundle) -> None:
    pixels, labels, _ = _lesions(12, np.random.default_rng(3))
    image = pixels[labels == 1][0]
    found = explain(lesion_bundle, image)
    tensor = lesion_bundle.to_input(image[None])
    inverse = road_score(lesion_bundle.model, tensor, 1 - found.heatmap, found.target_index)
    assert found.faithfulness > 0.05 and found.faithfulness > inverse
    assert explain(lesion_bundle, image).faithfulness == found.faithfulness  # seeded
    assert np.isnan(explain(lesion_bundle, image, score_faithfulness=False).faithfulness)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_gives_a_map(method: str) -> None:
    found = explain(_bundle("malaria_lenet"), _noise(), method=method)
    assert found.method == method and found.heatmap.shape == (SIZE, SIZE)
    assert np.isfinite(found.heatmap).all() and found.heatmap.max() > 0
    assert np.isfinite(found.faithfulness) and -1 <= found.faithfulness <= 1


def test_target_defaults_to_the_decision_at_the_bundle_threshold() -> None:
    always = explain(_bundle("malaria_lenet", threshold=0.0), _noise())
    never = explain(_bundle("malaria_lenet", threshold=1.01), _noise())
    assert (always.target_class, never.target_class) == ("PNEUMONIA", "NORMAL")
    chosen = explain(_bundle("malaria_lenet", threshold=0.0), _noise(), target="NORMAL")
    assert (chosen.target_index, chosen.target_class) == (0, "NORMAL")
    with pytest.raises(MedsightError, match="'COVID' is not one of"):
        explain(_bundle("malaria_lenet"), _noise(), target="COVID")


def test_bad_input_and_method_are_clear_errors() -> None:
    with pytest.raises(MedsightError, match=r"needs one \(64, 64, 3\) uint8 image"):
        explain(_bundle("malaria_lenet"), _noise(32))
    with pytest.raises(MedsightError, match="unknown CAM method 'magic'.*gradcam"):
        explain(_bundle("malaria_lenet"), _noise(), method="magic")


def test_model_state_is_restored_even_under_inference_mode() -> None:
    bundle = _bundle("resnet18")
    bundle.model.fc.weight.requires_grad_(False)
    flags = [p.requires_grad for p in bundle.model.parameters()]
    expected = bundle.logits(_noise()[None])
    with torch.inference_mode():  # as a server would call it
        explain(bundle, _noise())
    assert [p.requires_grad for p in bundle.model.parameters()] == flags
    assert all(p.grad is None for p in bundle.model.parameters())
    assert not any(m._forward_hooks for m in bundle.model.modules())
    assert not bundle.model.training
    np.testing.assert_array_equal(bundle.logits(_noise()[None]), expected)


def test_the_light_list_of_method_names_is_the_methods_of_cam() -> None:
    """The server offers and checks METHOD_NAMES before PyTorch is loaded: the same names."""
    assert METHOD_NAMES == tuple(METHODS)
