"""The tutorials' own small networks, layer for layer (docs/tutorials.md), in PyTorch.

They end in logits: the softmax of the Keras originals is folded into the cross-entropy loss.
Each has ``features`` (the conv blocks, the stages that :mod:`medsight.models.freeze` unfreezes)
and ``classifier`` (the head); tutorial (d)'s VGG16 has a timm ``base`` instead of ``features``.
"""

from __future__ import annotations

import torch
from torch import nn

from medsight.errors import ConfigError


def keras_init(module: nn.Module) -> None:
    """Keras' default initialisation (Glorot-uniform weights, zero biases).

    The tutorials trained with it; PyTorch's default (Kaiming-uniform with a=sqrt(5)) starts
    smaller and, with tutorial (a)'s slow Adagrad, barely moves in the first epochs.
    """
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)


def _flat_features(features: nn.Module, in_channels: int, image_size: tuple[int, int]) -> int:
    with torch.no_grad():
        return features(torch.zeros(1, in_channels, *image_size)).flatten(1).shape[1]


def conv_block(in_channels: int, out_channels: int, kernel: int, padding: str = "valid"):
    """Conv -> ReLU -> MaxPool(2): the unit the tutorial CNNs stack ('valid' as in Keras)."""
    return [
        nn.Conv2d(in_channels, out_channels, kernel, padding=padding),
        nn.ReLU(),
        nn.MaxPool2d(2),
    ]


class SeedCNN(nn.Module):
    """conv blocks (``features``) -> Flatten-Dense-activation[-Dropout]-Dense (``classifier``),
    Keras-initialised: the shape all three small tutorial networks share."""

    def __init__(
        self,
        blocks: list[nn.Module],
        num_classes: int,
        in_channels: int,
        image_size: tuple[int, int],
        hidden: int,
        activation: nn.Module,
        dropout: float | None,
    ):
        super().__init__()
        self.features = nn.Sequential(*blocks)
        flat = _flat_features(self.features, in_channels, image_size)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, hidden),
            activation,
            *([nn.Dropout(dropout)] if dropout else []),
            nn.Linear(hidden, num_classes),
        )
        keras_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class MalariaLeNet(SeedCNN):
    """Tutorial (a): Conv8-Pool-Conv16-Pool-Conv32(valid)-Pool-Dense64-Dropout-Dense."""

    def __init__(
        self, num_classes: int = 2, in_channels: int = 3, image_size: tuple[int, int] = (128, 128)
    ):
        blocks = [
            *conv_block(in_channels, 8, 3, "same"),
            *conv_block(8, 16, 3, "same"),
            *conv_block(16, 32, 3),
        ]
        super().__init__(blocks, num_classes, in_channels, image_size, 64, nn.ReLU(), 0.5)


class CovidScratchCNN(SeedCNN):
    """Tutorial (b): Conv32(5x5)-Pool-Conv64(5x5)-Pool-Dense512-Dense, all convs 'valid'."""

    def __init__(
        self, num_classes: int = 2, in_channels: int = 3, image_size: tuple[int, int] = (128, 128)
    ):
        blocks = [*conv_block(in_channels, 32, 5), *conv_block(32, 64, 5)]
        super().__init__(blocks, num_classes, in_channels, image_size, 512, nn.ReLU(), None)


class KermanyCNN(SeedCNN):
    """Tutorial (c): three 'valid' 3x3 convs (32-64-64) with pooling, Dense128 with the
    tutorial's sigmoid activation, Dropout, Dense."""

    def __init__(
        self, num_classes: int = 2, in_channels: int = 3, image_size: tuple[int, int] = (150, 150)
    ):
        blocks = [*conv_block(in_channels, 32, 3), *conv_block(32, 64, 3), *conv_block(64, 64, 3)]
        super().__init__(blocks, num_classes, in_channels, image_size, 128, nn.Sigmoid(), 0.5)


class VGG16Head(nn.Module):
    """Tutorial (d): VGG16 conv base (timm's ``vgg16``, without its fully connected top) and
    AvgPool(4x4)-Flatten-Dense64-Dropout-Dense.

    ``base`` is a timm ``vgg16`` whose ``pre_logits``/``head`` are pruned, so weights for timm's
    (or torchvision's) vgg16 load into it by name; :mod:`medsight.models.pretrained` targets it.
    """

    base_arch = "vgg16"

    def __init__(
        self, num_classes: int = 2, in_channels: int = 3, image_size: tuple[int, int] = (224, 224)
    ):
        super().__init__()
        import timm

        side = min(image_size) // 32  # the conv base halves the size five times
        if side < 4:
            raise ConfigError(
                f"vgg16_tutorial_head needs images of at least 128x128 (got {image_size}): "
                "its 4x4 average pooling runs on the 1/32-size feature map"
            )
        # Built on the meta device and pruned before allocation: the unused 4096-wide fully
        # connected top holds 120 M parameters and would take ~1.5 s to initialise.
        self.base = timm.create_model("vgg16", in_chans=in_channels, num_classes=0, device="meta")
        self.base.prune_intermediate_layers(prune_head=True)
        self.base.to_empty(device="cpu")
        for layer in self.base.modules():
            if isinstance(layer, nn.Conv2d):  # timm's VGG initialisation
                nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(layer.bias)
        pooled = (image_size[0] // 32 // 4) * (image_size[1] // 32 // 4)
        self.classifier = nn.Sequential(
            nn.AvgPool2d(4),
            nn.Flatten(),
            nn.Linear(512 * pooled, 64),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(64, num_classes),
        )
        keras_init(self.classifier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.base.forward_features(x))
