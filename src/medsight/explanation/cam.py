"""Class activation maps (Grad-CAM and relatives, from pytorch-grad-cam) for a bundle's model.

The target layer is found, not configured: one forward pass on a blank image records every
module's output, and the last module with a spatial (N, C, H, W) output outside the classifier
head is used (a ResNet's ``layer4``, a seed CNN's ``features``). Layers whose output is later
changed in place (a conv followed by ``ReLU(inplace=True)``) are passed over, because the saved
activations and gradients would no longer match. Each map gets a faithfulness score (ROAD, see
:func:`explain`) so that a pretty but meaningless heat-map can be told apart from one the model
really relies on.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from pytorch_grad_cam import (
    EigenCAM,
    EigenGradCAM,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from pytorch_grad_cam.metrics.road import ROADCombined
from pytorch_grad_cam.utils.model_targets import (
    ClassifierOutputSoftmaxTarget,
    ClassifierOutputTarget,
)
from torch import nn

from medsight.bundle import Bundle
from medsight.errors import MedsightError

# the names, in this order, are also methods.METHOD_NAMES (a test holds them equal)
METHODS = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "hirescam": HiResCAM,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
    "gradcam-elementwise": GradCAMElementWise,
    "eigencam": EigenCAM,  # class-agnostic: the first principal component of the activations
    "eigengradcam": EigenGradCAM,
    "scorecam": ScoreCAM,  # gradient-free, one forward pass per channel of the layer (slow)
}
ROAD_PERCENTILES = [20, 40, 60, 80]  # 4 of ROAD's 9 removal levels: the score at half the cost
ROAD_SEED = 0  # ROAD's imputation adds noise; a fixed seed makes the score reproducible


@dataclass
class Explanation:
    """One heat-map: what was explained (class, method, layer), the map, and its faithfulness."""

    target_index: int
    target_class: str
    method: str
    layer: str
    heatmap: np.ndarray  # (H, W) float32 in [0, 1], same size as the input pixels
    overlay: np.ndarray  # (H, W, 3) uint8 RGB: image with the heat-map blended on it
    faithfulness: float  # ROAD combined score in [-1, 1], higher = more faithful (see explain)


def spatial_layers(model: nn.Module, channels: int, image_size: tuple[int, int]) -> list[str]:
    """Names of the modules usable as a CAM layer, in the order they finish in a forward pass.

    Usable: a spatial (N, C, h, w) feature map larger than 1x1, not inside the classifier head,
    and not modified in place afterwards.
    """
    head = _head(model)
    head_ids = {id(m) for m in head.modules()} if head is not None else set()
    seen: list[tuple[str, torch.Tensor, int]] = []
    names = {id(m): name for name, m in model.named_modules() if name}

    def hook(module: nn.Module, _: object, output: object) -> None:
        name = names.get(id(module))
        if name and id(module) not in head_ids and _is_map(output, image_size):
            seen.append((name, output, output._version))

    handles = [m.register_forward_hook(hook) for m in model.modules() if id(m) in names]
    try:
        with torch.inference_mode(False), torch.no_grad():  # inference tensors have no version
            model(torch.zeros(1, channels, *image_size))
    finally:
        for handle in handles:
            handle.remove()
    ordered = [name for name, output, version in seen if output._version == version]
    return list(dict.fromkeys(ordered))


def _is_map(output: object, image_size: tuple[int, int]) -> bool:
    """An (N, C, h, w) tensor larger than 1x1 whose h:w follows the image's H:W (within a
    pixel): a feature map, not e.g. a transformer's (N, heads, tokens, dim) attention."""
    if not isinstance(output, torch.Tensor) or output.ndim != 4:
        return False
    (h, w), (height, width) = output.shape[-2:], image_size
    return h * w > 1 and abs(h * width - w * height) <= max(height, width)


def _head(model: nn.Module) -> nn.Module | None:
    if hasattr(model, "get_classifier"):
        head = model.get_classifier()
        return head if isinstance(head, nn.Module) else None
    return getattr(model, "classifier", None)


def find_layer(bundle: Bundle, layer: str | None = None) -> tuple[str, nn.Module]:
    """The CAM target layer: ``layer`` by module name, else the last usable one."""
    spec = bundle.spec
    candidates = spatial_layers(bundle.model, spec.channels, tuple(spec.image_size))
    if not candidates:
        raise MedsightError(
            f"{spec.model_name}: no layer with a spatial feature map larger than 1x1 for "
            f"{spec.image_size[0]}x{spec.image_size[1]} images; CAM methods need a "
            "convolutional model (vision transformers are not supported)"
        )
    name = candidates[-1] if layer is None else layer
    if name not in candidates:
        modules = dict(bundle.model.named_modules())
        why = "no such module" if name not in modules else "its output is not a usable map"
        raise MedsightError(
            f"layer {name!r} of {spec.model_name}: {why}; usable layers (last is the "
            f"default): {', '.join(candidates[-12:])}"
        )
    return name, bundle.model.get_submodule(name)


@contextmanager
def _gradients_on(model: nn.Module) -> Iterator[None]:
    """Gradients w.r.t. the input only; parameters' flags and ``.grad`` restored afterwards."""
    params = list(model.parameters())
    state = [(p.requires_grad, p.grad) for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        for p, (flag, grad) in zip(params, state, strict=True):
            p.requires_grad_(flag)
            p.grad = grad


def _target_index(bundle: Bundle, pixels: np.ndarray, target: int | str | None) -> int:
    names = bundle.spec.class_names
    if target is None:  # the decided class; a multi-label bundle's most probable label
        probs = bundle.predict_proba(pixels[None])
        if bundle.spec.task == "multilabel":
            return int(probs[0].argmax())
        return int(bundle.spec.decide(probs)[0])
    if isinstance(target, str):
        if target not in names:
            raise MedsightError(f"target class {target!r} is not one of {names}")
        return names.index(target)
    if not 0 <= target < len(names):
        raise MedsightError(f"target index {target} out of range for classes {names}")
    return int(target)


def overlay_image(pixels: np.ndarray, heatmap: np.ndarray, weight: float = 0.5) -> np.ndarray:
    """Blend a JET-coloured heat-map (resized to the image) onto (H, W, 1|3) uint8 pixels."""
    height, width = pixels.shape[:2]
    if heatmap.shape != (height, width):
        heatmap = cv2.resize(heatmap, (width, height), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap(np.uint8(255 * np.clip(heatmap, 0, 1)), cv2.COLORMAP_JET)
    colour = cv2.cvtColor(colour, cv2.COLOR_BGR2RGB).astype(np.float32)
    image = np.broadcast_to(pixels, (height, width, 3)).astype(np.float32)
    return np.uint8(np.clip(weight * image + (1 - weight) * colour, 0, 255))


def check_method(method: str) -> None:
    if method not in METHODS:
        raise MedsightError(f"unknown CAM method {method!r}; choose one of {', '.join(METHODS)}")


def explain(
    bundle: Bundle,
    pixels: np.ndarray,
    target: int | str | None = None,
    method: str = "gradcam",
    layer: str | None = None,
    *,
    score_faithfulness: bool = True,
) -> Explanation:
    """Heat-map of where ``bundle``'s model looks for ``target`` in one image.

    ``pixels``: one (H, W, C) uint8 image already resized to ``bundle.spec.image_size``.
    ``target``: a class name or index; by default the class the bundle predicts (at its
    decision threshold). The map is of the plain image, also for bundles with mirror TTA.

    ``faithfulness`` is ROAD's combined score (Rong et al. 2022) on the (uncalibrated) softmax
    probability of the target class (a multi-label bundle's: that label's sigmoid), the
    probability drop when the pixels the map ranks *most*
    relevant are replaced by a noisy linear infill, minus the drop when the *least* relevant
    are, halved and averaged over removing 20-80 % of the pixels. It lies in [-1, 1]; above 0
    means the model depends on the highlighted region more than on the rest (higher = more
    faithful); near 0, the map says little about what the model uses. It costs 8 forward
    passes and 8 sparse solves (about 0.1 s at 64x64, 3-5 s at 224x224 on 2 cores);
    ``score_faithfulness=False`` skips it (``faithfulness`` is then NaN).

    The model gets hooks for the duration of the call and gives them back, with its
    parameters' ``requires_grad`` and ``.grad`` unchanged; other forward passes of the same
    model must not run at the same time (a server runs both on one model thread).
    """
    check_method(method)
    spec = bundle.spec
    expected = (*spec.image_size, spec.channels)
    if pixels.dtype != np.uint8 or pixels.shape != expected:
        raise MedsightError(
            f"explain needs one {expected} uint8 image (resized to the bundle's input), "
            f"got {pixels.shape} {pixels.dtype}"
        )
    pixels = np.array(pixels)  # a writable copy: decoded images may be read-only views
    index = _target_index(bundle, pixels, target)
    name, module = find_layer(bundle, layer)
    cam = METHODS[method](bundle.model, [module])
    try:
        with _gradients_on(bundle.model):
            tensor = bundle.to_input(pixels[None]).requires_grad_(True)
            heatmap = cam(tensor, [ClassifierOutputTarget(index)])[0]
    finally:
        cam.activations_and_grads.release()
    heatmap = np.nan_to_num(heatmap.astype(np.float32)).clip(0, 1)
    return Explanation(
        target_index=index,
        target_class=spec.class_names[index],
        method=method,
        layer=name,
        heatmap=heatmap,
        overlay=overlay_image(bundle.framed(pixels[None])[0].numpy(), heatmap),
        faithfulness=road_score(
            bundle.model, tensor.detach(), heatmap, index, spec.task == "multilabel"
        )
        if score_faithfulness
        else float("nan"),
    )


class SigmoidTarget:
    """A multi-label model's probability of one label (pytorch-grad-cam's target protocol;
    its softmax target would make the labels compete)."""

    def __init__(self, index: int):
        self.index = index

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(output[..., self.index])


def road_score(
    model: nn.Module,
    tensor: torch.Tensor,
    heatmap: np.ndarray,
    index: int,
    multi_label: bool = False,
) -> float:
    """ROAD combined faithfulness of ``heatmap`` for class ``index`` (see :func:`explain`)."""
    target = SigmoidTarget(index) if multi_label else ClassifierOutputSoftmaxTarget(index)
    with torch.random.fork_rng(devices=[]), torch.inference_mode(), warnings.catch_warnings():
        # ROAD's imputer hands torch tensors to numpy, which NumPy 2 flags as deprecated
        warnings.filterwarnings("ignore", "__array_wrap__", DeprecationWarning)
        torch.manual_seed(ROAD_SEED)
        score = ROADCombined(percentiles=ROAD_PERCENTILES)(tensor, heatmap[None], [target], model)
    return float(np.asarray(score).ravel()[0])
