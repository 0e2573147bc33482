"""The tutorials' own small networks, layer for layer (GUIDE § 1), in PyTorch.

They end in logits: the softmax of the Keras originals is folded into the cross-entropy loss.
"""

from __future__ import annotations

import torch
from torch import nn


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


class MalariaLeNet(nn.Module):
    """Tutorial (a): Conv8-Pool-Conv16-Pool-Conv32(valid)-Pool-Dense64-Dropout-Dense."""

    def __init__(
        self, num_classes: int = 2, in_channels: int = 3, image_size: tuple[int, int] = (128, 128)
    ):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding="same"),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding="same"),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(_flat_features(self.features, in_channels, image_size), 64),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(64, num_classes),
        )
        keras_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
