"""Model registry: a name maps to a factory, so recipes and bundles name models, not code.

Registered names are the tutorials' own networks (tutorials (a)-(d) of docs/tutorials.md); any
other name is looked up in timm.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from medsight.errors import ConfigError
from medsight.models.seed_cnns import CovidScratchCNN, KermanyCNN, MalariaLeNet, VGG16Head

Factory = Callable[..., nn.Module]
REGISTRY: dict[str, tuple[Factory, str]] = {
    "malaria_lenet": (MalariaLeNet, "tutorial (a): LeNet-style CNN, 3 conv layers, ~0.5 M params"),
    "covid_scratch_cnn": (
        CovidScratchCNN,
        "tutorial (b): 2 conv layers (5x5) + Dense512, ~28 M params at 128 px",
    ),
    "kermany_cnn": (
        KermanyCNN,
        "tutorial (c): 3 conv layers + Dense128 (sigmoid), ~2.4 M params at 150 px",
    ),
    "vgg16_tutorial_head": (
        VGG16Head,
        "tutorial (d): VGG16 conv base + AvgPool-Dense64 head, ~15 M params, >= 128 px",
    ),
}


def list_models() -> dict[str, str]:
    """Registered model names with a one-line description."""
    return {name: about for name, (_, about) in REGISTRY.items()}


def create_model(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    image_size: tuple[int, int] = (224, 224),
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model, or any timm model by name, with fresh (untrained) weights."""
    if name in REGISTRY:
        factory, _ = REGISTRY[name]
        return factory(
            num_classes=num_classes, in_channels=in_channels, image_size=tuple(image_size), **kwargs
        )
    import timm

    if not timm.is_model(name):
        raise ConfigError(
            f"unknown model {name!r}: not in medsight's registry "
            f"({', '.join(REGISTRY)}) nor in timm (see timm.list_models())"
        )
    return timm.create_model(
        name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kwargs
    )
