"""Freezing: the head alone trains first, then all of the base or only its last stages."""

from __future__ import annotations

import pytest
from torch import nn

from medsight.errors import ConfigError
from medsight.models.freeze import (
    base_stages,
    count_trainable,
    freeze_base,
    split_head,
    unfreeze,
)
from medsight.models.zoo import create_model

# name -> (image size, head parameter names, stage count)
MODELS = {
    "resnet18": (64, {"fc.weight", "fc.bias"}, 5),  # stem + layer1..4
    "malaria_lenet": (64, None, 3),  # one stage per conv layer
    "kermany_cnn": (64, None, 3),
    "vgg16_tutorial_head": (128, None, 5),  # VGG's five conv blocks
    "tf_efficientnet_lite0": (64, {"classifier.weight", "classifier.bias"}, 5),
}


def _model(name: str) -> nn.Module:
    size = MODELS[name][0]
    return create_model(name, 2, 3, (size, size))


def _trainable(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_freeze_base_leaves_only_the_head_trainable(name: str) -> None:
    model = _model(name)
    everything = count_trainable(model)
    freeze_base(model)
    head = MODELS[name][1] or {f"classifier.{n}" for n, _ in model.classifier.named_parameters()}
    assert _trainable(model) == head
    assert count_trainable(model) == sum(p.numel() for p in split_head(model)[1]) < everything
    unfreeze(model, "all")
    assert count_trainable(model) == everything


@pytest.mark.parametrize("name", sorted(MODELS))
def test_stages_cover_the_base_once(name: str) -> None:
    model = _model(name)
    stages = base_stages(model)
    assert len(stages) == MODELS[name][2]
    assert sorted(id(p) for s in stages for p in s) == sorted(id(p) for p in split_head(model)[0])


@pytest.mark.parametrize(
    ("name", "stages", "trainable", "frozen"),
    [
        ("resnet18", 1, ["layer4.1.conv2.weight", "fc.weight"], ["layer3.1.conv2.weight"]),
        ("resnet18", 2, ["layer3.0.conv1.weight", "layer4.0.bn1.bias"], ["layer1.0.conv1.weight"]),
        ("resnet18", 0, ["fc.bias"], ["layer4.1.conv2.weight"]),
        ("resnet18", 99, ["conv1.weight", "layer1.0.conv1.weight"], []),
        ("malaria_lenet", 1, ["features.6.weight", "classifier.1.weight"], ["features.3.weight"]),
        (
            "vgg16_tutorial_head",
            1,
            ["base.features.24.weight", "base.features.28.bias", "classifier.2.weight"],
            ["base.features.21.weight"],
        ),
    ],
)
def test_unfreeze_last_stages(name: str, stages: int, trainable: list, frozen: list) -> None:
    model = _model(name)
    freeze_base(model)
    unfreeze(model, stages)
    params = dict(model.named_parameters())
    assert all(params[n].requires_grad for n in trainable)
    assert not any(params[n].requires_grad for n in frozen)


def test_unfreeze_stages_freezes_earlier_stages_of_a_fully_trainable_model() -> None:
    model = _model("resnet18")
    unfreeze(model, 1)
    trainable = _trainable(model)
    assert "layer4.0.conv1.weight" in trainable
    assert all(n.startswith(("layer4.", "fc.")) for n in trainable)


@pytest.mark.parametrize("stages", [-1, "some", True])
def test_unfreeze_rejects_invalid_stage_counts(stages: object) -> None:
    with pytest.raises(ConfigError, match="unfreeze must be"):
        unfreeze(_model("malaria_lenet"), stages)


def _saved_bytes(model: nn.Module, x) -> int:
    """Bytes autograd keeps for the backward pass of one forward."""
    import torch

    saved = []

    def pack(tensor):
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return sum(saved)


@pytest.mark.parametrize("name", ["resnet18", "vgg16_tutorial_head", "tf_efficientnet_lite0"])
def test_a_frozen_base_runs_without_autograd(name: str) -> None:
    """Frozen means frozen: with the base's weights frozen (and the input needing no gradient)
    autograd records nothing for the base, so its activations are not kept for a backward
    pass; only the head's are. The base also stops being the optimiser's business."""
    import torch

    model = _model(name).train()
    size = MODELS[name][0]
    x = torch.rand(2, 3, size, size)
    trained = _saved_bytes(model, x)
    freeze_base(model)
    frozen = _saved_bytes(model, x)
    head = split_head(model)[1]
    assert 0 < frozen < 0.02 * trained  # what is kept is the head's input, not the base's
    loss = model(x).sum()
    loss.backward()
    assert all(p.grad is None for p in split_head(model)[0])
    assert all(p.grad is not None for p in head)
