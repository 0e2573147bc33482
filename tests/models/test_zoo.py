"""The zoo: every tutorial network and common timm backbones build, run and train."""

from __future__ import annotations

import pytest
import torch

from medsight.errors import ConfigError
from medsight.models.zoo import REGISTRY, create_model, list_models

# name -> image size the test runs it at (small for speed; the VGG16 head needs >= 128 px)
SIZES = {
    "malaria_lenet": 64,
    "covid_scratch_cnn": 64,
    "kermany_cnn": 64,
    "vgg16_tutorial_head": 128,
    "resnet18": 32,
    "tf_efficientnet_lite0": 32,
    "convnext_atto": 32,
    "densenet121": 32,
}
# (name, input channels, classes): every tutorial network with 1 and 3 channels and 2 and 3
# classes; the slower timm backbones with one combination each. densenet121 is marked slow:
# its first pass (many distinct conv shapes) took 2-17 s on the 2-core project machine.
CASES = [(name, 1, 2) for name in REGISTRY] + [(name, 3, 3) for name in REGISTRY]
CASES += [("resnet18", 1, 2), ("tf_efficientnet_lite0", 1, 3), ("convnext_atto", 3, 2)]
CASES += [pytest.param("densenet121", 3, 2, marks=pytest.mark.slow)]


def test_every_registered_model_is_in_the_test_table() -> None:
    assert set(REGISTRY) <= set(SIZES)
    assert set(list_models()) == set(REGISTRY)
    assert all(about for about in list_models().values())


@pytest.mark.parametrize(("name", "channels", "classes"), CASES)
def test_model_gives_logits_and_gradients(name: str, channels: int, classes: int) -> None:
    torch.manual_seed(0)
    size = SIZES[name]
    model = create_model(name, classes, channels, (size, size)).train()
    logits = model(torch.randn(2, channels, size, size))
    assert logits.shape == (2, classes)
    logits.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing


@pytest.mark.parametrize(
    ("name", "size", "features"),
    [
        ("malaria_lenet", 128, 32 * 15 * 15),  # 'same', 'same', 'valid' convs
        ("covid_scratch_cnn", 128, 64 * 29 * 29),  # 128 -5+1 /2 -5+1 /2
        ("kermany_cnn", 150, 64 * 17 * 17),  # 150 -2 /2 -2 /2 -2 /2
        ("vgg16_tutorial_head", 224, 512),  # 7x7x512 -> AvgPool(4) -> 1x1x512
    ],
)
def test_seed_networks_match_the_tutorial_shapes(name: str, size: int, features: int) -> None:
    model = create_model(name, 2, 3, (size, size))
    dense = [m for m in model.classifier.modules() if isinstance(m, torch.nn.Linear)]
    assert dense[0].in_features == features
    assert dense[-1].out_features == 2


def test_vgg16_head_rejects_images_too_small_for_its_pooling() -> None:
    with pytest.raises(ConfigError, match="at least 128"):
        create_model("vgg16_tutorial_head", 2, 3, (96, 96))


@pytest.mark.parametrize("name", ["no_such_model", "resnet*"])
def test_unknown_name_is_a_config_error(name: str) -> None:
    with pytest.raises(ConfigError, match="unknown model"):
        create_model(name, 2)
