"""The tutorials' own networks, layer for layer as docs/tutorials.md describes them."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from medsight.errors import ConfigError
from medsight.models.seed_cnns import (
    CovidScratchCNN,
    KermanyCNN,
    MalariaLeNet,
    SeedCNN,
    VGG16Head,
    conv_block,
    keras_init,
)


def _convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.features if isinstance(m, nn.Conv2d)]


def _kinds(sequence: nn.Sequential) -> list[type]:
    return [type(m) for m in sequence]


def _features_kinds(n_blocks: int) -> list[type]:
    return [nn.Conv2d, nn.ReLU, nn.MaxPool2d] * n_blocks


def test_conv_block_is_conv_relu_pool() -> None:
    conv, relu, pool = conv_block(3, 8, 5, "same")
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (3, 8, (5, 5))
    assert conv.padding == "same" and isinstance(relu, nn.ReLU)
    assert isinstance(pool, nn.MaxPool2d) and pool.kernel_size == 2
    assert conv_block(1, 2, 3)[0].padding == "valid"  # Keras' default


def test_malaria_lenet_is_tutorial_a() -> None:
    model = MalariaLeNet(2, 3, (128, 128))
    assert isinstance(model, SeedCNN)
    assert _kinds(model.features) == _features_kinds(3)
    convs = _convs(model)
    assert [c.out_channels for c in convs] == [8, 16, 32]
    assert [c.in_channels for c in convs] == [3, 8, 16]
    assert [c.kernel_size for c in convs] == [(3, 3)] * 3
    assert [c.padding for c in convs] == ["same", "same", "valid"]
    assert _kinds(model.classifier) == [
        nn.Flatten,
        nn.Linear,
        nn.ReLU,
        nn.Dropout,
        nn.Linear,
    ]
    hidden, dropout, out = model.classifier[1], model.classifier[3], model.classifier[4]
    assert hidden.out_features == 64 and dropout.p == 0.5
    assert (out.in_features, out.out_features) == (64, 2)


def test_covid_scratch_cnn_is_tutorial_b() -> None:
    model = CovidScratchCNN(2, 3, (128, 128))
    assert _kinds(model.features) == _features_kinds(2)
    convs = _convs(model)
    assert [c.out_channels for c in convs] == [32, 64]
    assert [c.kernel_size for c in convs] == [(5, 5), (5, 5)]
    assert [c.padding for c in convs] == ["valid", "valid"]
    assert _kinds(model.classifier) == [nn.Flatten, nn.Linear, nn.ReLU, nn.Linear]  # no dropout
    assert model.classifier[1].out_features == 512
    assert model.classifier[3].in_features == 512


def test_kermany_cnn_is_tutorial_c() -> None:
    model = KermanyCNN(2, 3, (150, 150))
    assert _kinds(model.features) == _features_kinds(3)
    convs = _convs(model)
    assert [c.out_channels for c in convs] == [32, 64, 64]
    assert [c.kernel_size for c in convs] == [(3, 3)] * 3
    assert [c.padding for c in convs] == ["valid"] * 3
    assert _kinds(model.classifier) == [
        nn.Flatten,
        nn.Linear,
        nn.Sigmoid,  # the tutorial's Dense(128, sigmoid)
        nn.Dropout,
        nn.Linear,
    ]
    assert model.classifier[1].out_features == 128 and model.classifier[3].p == 0.5


def test_default_input_sizes_are_the_tutorials() -> None:
    assert MalariaLeNet().classifier[1].in_features == 32 * 15 * 15  # 128 px
    assert KermanyCNN().classifier[1].in_features == 64 * 17 * 17  # 150 px


def test_vgg16_head_is_tutorial_d() -> None:
    model = VGG16Head(2, 3, (224, 224))
    assert not hasattr(model, "features")
    assert _kinds(model.classifier) == [
        nn.AvgPool2d,
        nn.Flatten,
        nn.Linear,
        nn.ReLU,
        nn.Dropout,
        nn.Linear,
    ]
    pool, dense, drop, out = (model.classifier[i] for i in (0, 2, 4, 5))
    assert pool.kernel_size == 4
    assert (dense.in_features, dense.out_features) == (512, 64) and drop.p == 0.5
    assert (out.in_features, out.out_features) == (64, 2)
    convs = [m for m in model.base.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13  # VGG16's conv base
    assert not any(isinstance(m, nn.Linear) for m in model.base.modules())  # no 4096-wide top
    assert all(not p.is_meta for p in model.parameters())


def test_vgg16_head_at_256_pools_two_by_two() -> None:
    model = VGG16Head(3, 1, (256, 288))
    assert model.classifier[2].in_features == 512 * 2 * 2  # 8x9 map -> AvgPool(4) -> 2x2
    assert model(torch.zeros(1, 1, 256, 288)).shape == (1, 3)


@pytest.mark.parametrize("size", [(127, 127), (96, 224), (224, 100)])
def test_vgg16_head_refuses_images_below_128_px(size: tuple[int, int]) -> None:
    with pytest.raises(ConfigError, match=r"at least 128x128 .*4x4 average pooling"):
        VGG16Head(2, 3, size)


def test_vgg16_head_accepts_exactly_128_px() -> None:
    assert VGG16Head(2, 3, (128, 128))(torch.zeros(2, 3, 128, 128)).shape == (2, 2)


@pytest.mark.parametrize("cls", [MalariaLeNet, CovidScratchCNN, KermanyCNN])
@pytest.mark.parametrize("channels", [1, 3])
def test_logits_of_shape_n_by_classes(cls: type, channels: int) -> None:
    torch.manual_seed(0)
    model = cls(num_classes=4, in_channels=channels, image_size=(72, 96)).eval()
    assert _convs(model)[0].in_channels == channels
    logits = model(torch.rand(5, channels, 72, 96))
    assert logits.shape == (5, 4) and torch.isfinite(logits).all()


def test_the_networks_end_in_logits_not_probabilities() -> None:
    torch.manual_seed(0)
    model = MalariaLeNet(2, 3, (64, 64)).eval()
    logits = model(torch.rand(8, 3, 64, 64) * 50)
    assert not torch.allclose(logits.sum(1), torch.ones(8))
    assert isinstance(model.classifier[-1], nn.Linear)


@pytest.mark.parametrize("cls", [MalariaLeNet, CovidScratchCNN, KermanyCNN])
def test_keras_initialisation_of_the_seed_networks(cls: type) -> None:
    torch.manual_seed(0)
    model = cls(2, 3, (64, 64))
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for layer in layers:
        assert torch.count_nonzero(layer.bias) == 0
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(layer.weight)
        bound = math.sqrt(6 / (fan_in + fan_out))
        weights = layer.weight.detach()
        assert weights.abs().max() <= bound
        if weights.numel() >= 1000:  # uniform over the whole range, not a narrower one
            assert weights.abs().max() > 0.9 * bound
            assert weights.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)


def test_keras_init_resets_any_module() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.Linear(200, 100))
    nn.init.constant_(model[0].bias, 1.0)
    nn.init.constant_(model[2].weight, 5.0)
    batch_norm = model[1].weight.detach().clone()
    keras_init(model)
    assert torch.count_nonzero(model[0].bias) == 0 and torch.count_nonzero(model[2].bias) == 0
    bound = math.sqrt(6 / (200 + 100))
    assert model[2].weight.abs().max() <= bound
    assert model[2].weight.abs().max() > 0.95 * bound
    assert torch.equal(model[1].weight, batch_norm)  # only conv and dense layers


def test_vgg16_head_keras_initialises_only_its_head() -> None:
    torch.manual_seed(0)
    model = VGG16Head(2, 3, (128, 128))
    for layer in (model.classifier[2], model.classifier[5]):
        assert torch.count_nonzero(layer.bias) == 0
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(layer.weight)
        assert layer.weight.abs().max() <= math.sqrt(6 / (fan_in + fan_out))
    first = next(m for m in model.base.modules() if isinstance(m, nn.Conv2d))
    assert torch.count_nonzero(first.bias) == 0
    # timm's Kaiming-normal (fan_out) on the base: std sqrt(2 / (64 * 3 * 3))
    assert first.weight.std().item() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.15)
