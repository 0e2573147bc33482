"""Transfer learning: train the head alone first, then unfreeze the base, all or its last stages.

The head is what a new task replaces: timm's ``get_classifier()``, or a seed network's
``classifier`` (for tutorial (d) of docs/tutorials.md, the whole AvgPool-Dense64-Dense top, as
its tutorial trains).
Everything else is the base, split into stages for partial unfreezing:

- timm models (and tutorial (d)'s timm ``base``): the feature stages timm reports in
  ``model.feature_info`` (the stem, then one stage per resolution: ResNet's ``layer1..4``,
  VGG's five conv blocks); layers before the first stage join it, layers after the last
  (a final norm or conv head) join the last.
- the other seed networks: one stage per conv layer (with its activation and pooling).
"""

from __future__ import annotations

from typing import Literal

from torch import nn

from medsight.errors import ConfigError


def head_module(model: nn.Module) -> nn.Module:
    """The module that maps features to class logits (replaced when the class count changes)."""
    if hasattr(model, "get_classifier"):
        return model.get_classifier()
    return model.classifier


def split_head(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(base parameters, head parameters)."""
    head = list(head_module(model).parameters())
    ids = {id(p) for p in head}
    return [p for p in model.parameters() if id(p) not in ids], head


def _feature_stages(model: nn.Module, head_ids: set[int]) -> list[list[nn.Parameter]]:
    if not getattr(model, "feature_info", None):
        raise ConfigError(
            f"{type(model).__name__} does not describe its stages; use train.unfreeze=all"
        )
    names = [name for name, _ in model.named_modules()]
    ends = [  # position of each stage's last sub-module in module order
        max(i for i, name in enumerate(names) if name == end or name.startswith(end + "."))
        for end in (info["module"] for info in model.feature_info)
    ]
    stages: list[list[nn.Parameter]] = [[] for _ in ends]
    for position, module in enumerate(model.modules()):
        stage = next((s for s, end in enumerate(ends) if position <= end), len(ends) - 1)
        stages[stage] += [p for p in module.parameters(recurse=False) if id(p) not in head_ids]
    return [stage for stage in stages if stage]


def base_stages(model: nn.Module) -> list[list[nn.Parameter]]:
    """The base's parameters by stage, input side first (see the module docstring)."""
    head_ids = {id(p) for p in head_module(model).parameters()}
    if hasattr(model, "base"):
        return _feature_stages(model.base, head_ids)
    if hasattr(model, "feature_info"):
        return _feature_stages(model, head_ids)
    return [list(layer.parameters()) for layer in model.features if isinstance(layer, nn.Conv2d)]


def freeze_base(model: nn.Module) -> None:
    """Only the head trains (the tutorials' frozen ImageNet base)."""
    base, head = split_head(model)
    for p in base:
        p.requires_grad_(False)
    for p in head:
        p.requires_grad_(True)


def unfreeze(model: nn.Module, stages: Literal["all"] | int = "all") -> None:
    """Make the head and the whole base ("all") or only its last ``stages`` stages trainable;
    earlier stages are frozen, so the result does not depend on the previous state."""
    if stages == "all":
        model.requires_grad_(True)
        return
    if isinstance(stages, bool) or not isinstance(stages, int) or stages < 0:
        raise ConfigError(f"unfreeze must be 'all' or a number of stages >= 0, not {stages!r}")
    freeze_base(model)
    if stages:
        for stage in base_stages(model)[-stages:]:
            for p in stage:
                p.requires_grad_(True)


def count_trainable(model: nn.Module) -> int:
    """Number of parameter values that the optimiser updates."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
