"""Model registry: a name maps to a factory, so recipes and bundles name models, not code.

Registered names are the tutorials' own networks; any other name is looked up in timm.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from medsight.errors import ConfigError
from medsight.models.seed_cnns import MalariaLeNet

Factory = Callable[..., nn.Module]
REGISTRY: dict[str, tuple[Factory, str]] = {
    "malaria_lenet": (MalariaLeNet, "tutorial (a): LeNet-style CNN, 3 conv layers, ~0.5 M params"),
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

    if not timm.list_models(name):
        raise ConfigError(
            f"unknown model {name!r}: not in medsight's registry "
            f"({', '.join(REGISTRY)}) nor in timm (see timm.list_models())"
        )
    return timm.create_model(
        name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kwargs
    )
