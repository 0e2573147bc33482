"""Recipes are data: YAML files validated into typed config objects, overridable by key=value.

A recipe fixes everything about one training: data handling, model, augmentation, optimiser.
The resolved config is saved in the run directory so a run can always be traced and repeated.
"""

from __future__ import annotations

import difflib
import re
import typing
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from medsight.errors import ConfigError
from medsight.fsutil import atomic_write_text

# a threshold rule: "youden", "sensitivity>=0.95", "specificity>=0.9" or a probability
THRESHOLD_TARGET = re.compile(r"^(sensitivity|specificity)\s*>=\s*(0?\.\d+|1(\.0*)?)$")


def check_rule(rule: str) -> str:
    """Validate a threshold rule (see :mod:`medsight.evaluation.thresholds`), returning it."""
    rule = str(rule).strip()
    if rule == "youden" or THRESHOLD_TARGET.match(rule):
        return rule
    try:
        value = float(rule)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise ConfigError(
            f"threshold rule {rule!r} not understood: use 'youden', 'sensitivity>=0.95', "
            "'specificity>=0.9' or a probability between 0 and 1"
        )
    return rule


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Published(Strict):
    """The tutorial's own published figure, shown beside ours in the report."""

    source: str
    claim: str
    metrics: dict[str, float] = Field(default_factory=dict)


class DataConfig(Strict):
    image_size: tuple[int, int] = (128, 128)  # (height, width)
    channels: Literal[1, 3] = 3
    positive_class: str | None = None  # the disease class of a binary task
    split_by: Literal["patient", "image"] = "patient"
    val_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.1, ge=0, lt=1)
    limit: int | None = Field(None, gt=0, description="use at most this many images (quick runs)")
    # a new data set is decoded while the first epoch trains, in the order it reads the images;
    # false decodes every image first (a lung crop or several processes always do)
    overlap_decoding: bool = True
    # tutorial (d): build the data from the ieee8023 metadata.csv in --data plus Kermany images
    # covid-findings: several labels per X-ray from the sheet (medsight.data.findings)
    curation: Literal["covid-vs-normal", "covid-vs-pneumonia", "covid-findings"] | None = None
    kermany: str | None = None  # Kermany chest_xray folder; default: <data>/../chest_xray
    curation_other_source: Literal["kermany", "metadata"] = "kermany"
    # patient ids (docs/data.md): by default a CSV patient column, the DICOM PatientID (hashed),
    # or a known dataset's file names; these replace that with the data's own rule
    patient_pattern: str | None = None  # regex on the file path: group `patient`, else the first
    patient_from: Literal["parent"] | None = None  # the image's parent folder is its patient
    require_patients: bool = False  # refuse images without a patient id instead of splitting them
    # labels from the file path (medsight.data.labels): a regex whose group `label` (else the
    # first group) is the label, renamed by label_names; unmatched images keep their own label
    label_pattern: str | None = None
    label_names: dict[str, str] = Field(default_factory=dict)
    # several labels per image (medsight.data.multilabel): `|`-separated findings in a CSV's
    # label column, or (with `labels` naming columns) one column per finding holding 1 / 0 /
    # -1 (uncertain: handled by `uncertain`) / empty (not recorded: left out, never negative)
    multi_label: bool = False
    labels: list[str] = Field(default_factory=list)
    uncertain: Literal["ignore", "zeros", "ones"] = "ignore"

    @field_validator("patient_pattern", "label_pattern")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"{value!r} is not a regular expression: {exc}") from exc
        return value


class LungCropConfig(Strict):
    """Crop every X-ray to its lung field before the model sees it (medsight.models.lungs).

    The run trains a small lung U-Net first (a few minutes), unless ``model`` names one."""

    model: str | None = None  # a lung model folder from an earlier run (RUN_DIR/lungs)
    # the X-rays the masks outline; default: <data>/../covid/images (the ieee8023 collection)
    images: str | None = None
    masks: str = "torchxrayvision"  # its V7 Labs lung masks, or a folder/.zip named like images
    epochs: int = Field(20, ge=1)


class PreprocessConfig(Strict):
    """Pixel scaling after resizing to ``image_size``: ``(x / 255 - mean) / std``."""

    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    tta: bool = False  # test-time augmentation: average over the image and its mirror image
    # "equalize": histogram-equalise every image first, so that a model does not depend on
    # how a scanner or site exposed it (any monotone change of grey levels is undone)
    exposure: Literal["none", "equalize"] = "none"
    lung_crop: LungCropConfig | None = None


class AugmentConfig(Strict):
    """Keras ImageDataGenerator-style random transforms (degrees, fractions)."""

    rotation: float = 0.0
    shear: float = 0.0  # degrees, as Keras' shear_range
    zoom: float = Field(0.0, ge=0, lt=1)
    shift: float = 0.0
    hflip: bool = False
    vflip: bool = False
    brightness: float = Field(0.0, ge=0)  # random brightness factor in [1 - b, 1 + b]
    contrast: float = Field(0.0, ge=0)  # random contrast factor in [1 - c, 1 + c]
    blur: float = Field(0.0, ge=0)  # Gaussian blur, sigma uniform in [0, blur] pixels
    fill: Literal["nearest", "constant"] = "nearest"


class ModelConfig(Strict):
    name: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    # None (random init), "imagenet", a weights file (.safetensors / .pt / .pth state dict),
    # or a medsight bundle folder (medical-to-medical transfer). See medsight.models.pretrained.
    pretrained: str | None = None


class TrainConfig(Strict):
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(32, ge=1)
    optimizer: Literal["adagrad", "adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["none", "cosine", "onecycle"] = "none"
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    # keep an exponential moving average of the weights (decay per step); validation, the best
    # checkpoint and the bundle then use the average
    ema: float | None = Field(None, gt=0, lt=1)
    # mixup (Zhang et al. 2018): blend each image with another of its batch, weight ~ Beta(a, a),
    # and the loss likewise; 0 is off, 0.2-0.4 is usual
    mixup: float = Field(0.0, ge=0)
    class_balance: Literal["none", "weights", "sampler"] = "none"
    # where to train: a CUDA GPU when there is one (auto), or say which; gpu without one is an
    # error. See medsight.training.device
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    # auto: bf16 mixed on a GPU that has it, else fp16 mixed (16, GPU only); on a CPU bf16
    # mixed where it has AMX or AVX512_BF16, else fp32. Not always faster: EfficientNet-Lite0
    # trained slower in bf16 on an AVX-512 BF16 CPU without AMX (21 vs 26 images/s)
    precision: Literal["auto", "32", "bf16", "16"] = "auto"
    monitor: Literal["val_loss", "val_accuracy"] = "val_accuracy"
    early_stopping: int | None = Field(None, ge=1, description="patience in epochs")
    # DataLoader worker processes. auto: none when training on a CPU of up to 4 cores (the
    # model's threads use every core; on 2 cores workers made training slower and took
    # 100-170 MB more: benchmarks/RESULTS.md), else 2. See medsight.training.device
    num_workers: Literal["auto"] | Annotated[int, Field(ge=0)] = "auto"
    seed: int = 42
    # transfer learning: train only the head for the first freeze_epochs, then unfreeze
    # ("all" or the last N stages) with lr * unfreeze_lr_factor
    freeze_epochs: int = Field(0, ge=0)
    unfreeze: Literal["all"] | int = "all"
    unfreeze_lr_factor: float = Field(0.1, gt=0)
    # experiment tracking through Lightning's loggers (medsight.training.tracking): per-epoch
    # metrics, the recipe and the final figures; tensorboard and mlflow are optional extras
    tracking: Literal["none", "csv", "tensorboard", "mlflow"] = "none"

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_as_text(cls, value: Any) -> Any:
        """``train.precision=32`` on the command line (and ``precision: 16`` in YAML) arrive as
        numbers; the choices are words."""
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class EvaluateConfig(Strict):
    """How the decision threshold and calibration are set on the validation split."""

    # "youden", "sensitivity>=0.95", "specificity>=0.9" or a fixed probability such as 0.5
    threshold: str = "youden"
    calibrate: bool = True  # temperature scaling fitted on the validation split
    bootstrap_seed: int = 0

    @field_validator("threshold", mode="before")
    @classmethod
    def _rule(cls, value: Any) -> str:
        try:
            return check_rule(str(value))
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc


class Recipe(Strict):
    name: str
    description: str
    published: Published | None = None
    data: DataConfig = Field(default_factory=DataConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    model: ModelConfig
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)


def recipe_names() -> list[str]:
    """Names of the built-in recipes (the YAML files shipped in ``medsight/recipes``)."""
    folder = resources.files("medsight") / "recipes"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _recipe_text(name_or_path: str) -> tuple[str, str]:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path.read_text(), str(path)
    if name_or_path not in recipe_names():
        raise ConfigError(
            f"unknown recipe {name_or_path!r}; built-in recipes: "
            f"{', '.join(recipe_names())} (or give a path to a .yaml file)"
        )
    resource = resources.files("medsight") / "recipes" / f"{name_or_path}.yaml"
    return resource.read_text(), name_or_path


def parse_override(text: str) -> tuple[list[str], Any]:
    """``train.lr=3e-4`` -> (["train", "lr"], 0.0003); values are parsed as YAML scalars."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. train.lr=3e-4)")
    return key.strip().split("."), yaml.safe_load(value) if value.strip() else None


def _section(annotation: Any) -> type[BaseModel] | None:
    """The config class a field holds (``LungCropConfig | None`` -> LungCropConfig), if any."""
    candidates = typing.get_args(annotation) or (annotation,)
    return next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)


def _paths(model: type[BaseModel], prefix: str = "") -> dict[str, str]:
    paths = {}
    for name, info in model.model_fields.items():
        path, section = prefix + name, _section(info.annotation)
        origin = typing.get_origin(info.annotation)
        paths[path] = "section" if section else "mapping" if origin is dict else "value"
        if section:
            paths.update(_paths(section, path + "."))
    return paths


FIELD_PATHS = _paths(Recipe)  # every dotted key a recipe has: "train.lr" -> "value"


def recipe_fields() -> list[str]:
    """Every dotted recipe key that takes a value (``train.epochs``, ``data.limit``, ...)."""
    return [path for path, kind in FIELD_PATHS.items() if kind != "section"]


def is_field(keys: list[str]) -> bool:
    """Whether a dotted key (split at the dots) names a recipe field, or a key in a mapping."""
    for depth in range(1, len(keys) + 1):
        kind = FIELD_PATHS.get(".".join(keys[:depth]))
        if kind is None:
            return False
        if kind == "mapping":  # model.kwargs.drop_rate: any key inside a mapping
            return True
        if kind == "value":
            return depth == len(keys)
    return True


def suggest(key: str) -> list[str]:
    """The valid keys nearest to a mistyped one: the closest dotted spellings, else (and for a
    bare name such as ``epochs``) the fields of that name or a close one in every section."""
    fields = recipe_fields()
    if "." in key:
        near = difflib.get_close_matches(key, fields, n=3, cutoff=0.8)
        if near:
            return near
    leaves = {path.rsplit(".", 1)[-1] for path in fields}
    names = difflib.get_close_matches(key.rsplit(".", 1)[-1], leaves, n=2, cutoff=0.75)
    found = [p for n in names for p in sorted(fields, key=len) if p.rsplit(".", 1)[-1] == n]
    return [p for p in found if p != key][:3]


def unknown_key(key: str, aliases: dict[str, str] | None = None) -> ConfigError:
    """The error for a key no recipe has, with the nearest valid keys (and ``aliases``, e.g.
    the command line's ``--epochs`` for ``train.epochs``)."""
    near = suggest(key)
    near += [aliases[n] for n in near if aliases and n in aliases]
    hint = f"; did you mean {' or '.join(near)}?" if near else ""
    return ConfigError(
        f"{key!r} is not a recipe field{hint} (medsight recipes show NAME lists them all)"
    )


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each ``key=value`` in the raw recipe; a key no recipe has is refused with the
    nearest valid keys, before anything is validated."""
    for text in overrides:
        keys, value = parse_override(text)
        if not is_field(keys):
            raise unknown_key(".".join(keys))
        node = raw
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if node is None:  # an optional section the recipe leaves out (lung_crop: null)
                raise ConfigError(
                    f"override {text!r}: {key!r} is off in this recipe; switch it on first "
                    f"with {key}={{}} or give the whole section"
                )
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {key!r} is not a section")
        node[keys[-1]] = value
    return raw


def load_recipe(name_or_path: str, overrides: list[str] | None = None) -> Recipe:
    """Load a built-in recipe by name (or a YAML file), apply overrides and validate."""
    text, origin = _recipe_text(name_or_path)
    raw = apply_overrides(yaml.safe_load(text) or {}, overrides or [])
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_problem(e) for e in exc.errors())
        raise ConfigError(f"recipe {origin}: {problems}") from exc


def _problem(error: Any) -> str:
    key = ".".join(map(str, error["loc"]))
    if error["type"] == "extra_forbidden":
        return str(unknown_key(key))
    return f"{key}: {error['msg']}"


def recipe_values(recipe: Recipe) -> dict[str, Any]:
    """The resolved recipe as dotted keys and values, defaults included (``recipes show``)."""

    def flatten(value: Any, path: str) -> dict[str, Any]:
        if FIELD_PATHS.get(path, "section") == "section" and isinstance(value, dict):
            found: dict[str, Any] = {}
            for key, inner in value.items():
                found.update(flatten(inner, f"{path}.{key}" if path else key))
            return found
        return {path: value}

    return flatten(recipe.model_dump(mode="json"), "")


def save_recipe(recipe: Recipe, path: Path) -> None:
    atomic_write_text(path, yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
