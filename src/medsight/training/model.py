"""The model a recipe trains, started from its pretrained weights, and the bundle spec it will
be saved with (the input pipeline those weights expect: mean, std, exposure)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from medsight.bundle import BundleSpec, read_bundle
from medsight.config import Recipe
from medsight.data.multilabel import MultiLabelRule
from medsight.models.lung_spec import LungSpec
from medsight.models.pretrained import GivenWeights, load_pretrained
from medsight.models.zoo import create_model

log = logging.getLogger(__name__)


def pretrained_source(source: str) -> str | GivenWeights:
    """``model.pretrained`` as :func:`load_pretrained` takes it: a bundle or run folder is
    read here (its weights and the input pipeline they were trained with)."""
    path = Path(source).expanduser()
    if source == "imagenet" or not path.is_dir():
        return source
    spec, state, folder = read_bundle(path)
    return GivenWeights(
        state=state,
        origin=f"bundle {folder}",
        model_name=spec.model_name,
        image_size=tuple(spec.image_size),
        mean=tuple(spec.mean),
        std=tuple(spec.std),
        exposure=spec.exposure,
    )


def build_model(
    recipe: Recipe,
    class_names: list[str],
    positive_class: str | None = None,
    lungs: LungSpec | None = None,
    multi_label: MultiLabelRule | None = None,
) -> tuple[torch.nn.Module, BundleSpec]:
    """The recipe's model with its pretrained weights, and the spec of the bundle it becomes
    (threshold and temperature are fitted after training): the input pipeline is what the
    starting weights expect, else the recipe's choice."""
    cfg, pre = recipe.data, recipe.preprocess
    model = create_model(
        recipe.model.name, len(class_names), cfg.channels, cfg.image_size, **recipe.model.kwargs
    )
    mean, std, exposure = tuple(pre.mean), tuple(pre.std), pre.exposure
    if recipe.model.pretrained:
        info = load_pretrained(model, recipe.model.name, pretrained_source(recipe.model.pretrained))
        if info.exposure and info.exposure != pre.exposure:
            log.warning(
                "model.pretrained=%s was trained with preprocess.exposure=%s: fine-tuning "
                "with the same (the recipe says %s)",
                recipe.model.pretrained,
                info.exposure,
                pre.exposure,
            )
        mean, std, exposure = info.mean, info.std, info.exposure or pre.exposure
    spec = BundleSpec(
        model_name=recipe.model.name,
        model_kwargs=recipe.model.kwargs,
        class_names=list(class_names),
        positive_class=positive_class,
        image_size=cfg.image_size,
        channels=cfg.channels,
        mean=mean,
        std=std,
        tta=pre.tta,
        exposure=exposure,
        lung_crop=lungs,
        label_pattern=cfg.label_pattern,
        label_names=dict(cfg.label_names),
        multi_label=multi_label,
        recipe=recipe.name,
    )
    return model, spec
