"""What a bundle knows about itself, and the rules it applies: probabilities, decision, task.

``bundle.json`` holds a :class:`BundleSpec`. Everything downstream (evaluate, predict, serve,
explain, export) asks the spec for calibrated probabilities and decisions instead of working
them out again, so they cannot disagree.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from medsight.data.multilabel import NO_FINDING, MultiLabelRule
from medsight.errors import MedsightError
from medsight.models.lung_spec import LungSpec

FORMAT_VERSION = 1
Task = Literal["binary", "multiclass", "multilabel"]
QUANTILE = 0.99  # of the validation split's domain distances: where the guard's threshold sits


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` (numerically stable)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return (z / z.sum(axis=1, keepdims=True)).astype(np.float32)


def sigmoid(logits: np.ndarray, temperatures: np.ndarray | float = 1.0) -> np.ndarray:
    """Element-wise logistic of ``logits / temperatures`` (one temperature per column)."""
    z = np.asarray(logits, dtype=np.float64) / temperatures
    return (0.5 * (1 + np.tanh(0.5 * z))).astype(np.float32)  # stable for large |z|


def decide(
    probs: np.ndarray, positive_index: int | None, threshold: float | np.ndarray = 0.5
) -> np.ndarray:
    """Predicted class per row: for a binary task (``positive_index`` given) the positive class
    when its probability reaches the threshold (one threshold per row allowed), else the most
    probable class."""
    if positive_index is None:
        return probs.argmax(axis=1)
    negative_index = 1 - positive_index
    return np.where(probs[:, positive_index] >= threshold, positive_index, negative_index)


class DomainSpec(BaseModel):
    """What a bundle says about its domain guard (:mod:`.domain`)."""

    method: Literal["mahalanobis"] = "mahalanobis"
    features: str  # which feature vectors it measures, e.g. "imagenet tf_efficientnet_lite0"
    threshold: float  # squared distance above which an image is out of domain
    quantile: float = QUANTILE  # of the validation split's distances, where the threshold sits
    fitted_on: int  # training images its statistics come from
    val_out_of_domain: float  # fraction of the validation split above the threshold

    def scores(self, distances: np.ndarray) -> np.ndarray:
        """Distances as ``domain_score``: 1.0 at the threshold, above it out of domain."""
        return np.asarray(distances, dtype=np.float64) / self.threshold

    def in_domain(self, distances: np.ndarray) -> np.ndarray:
        return self.scores(distances) <= 1.0


class BundleSpec(BaseModel):
    """Everything needed to rebuild the model, feed it images exactly as in training and turn
    its logits into an answer."""

    format_version: int = FORMAT_VERSION
    model_name: str
    model_kwargs: dict[str, Any] = {}
    class_names: list[str]
    positive_class: str | None = None  # the disease class of a binary task
    image_size: tuple[int, int]
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    threshold: float = 0.5  # on the calibrated positive-class probability (binary bundles)
    threshold_rule: str = "fixed 0.5"  # how it was chosen, e.g. "youden" on the val split
    temperature: float = 1.0  # temperature scaling: calibrated = softmax(logits / temperature)
    tta: bool = False  # average the logits of the image and its horizontal mirror
    exposure: str = "none"  # "equalize": histogram-equalise each image before normalising
    # crop each image to its lung field first (the lung U-Net's weights: lungs.safetensors)
    lung_crop: LungSpec | None = None
    # labels from the file path (data.label_pattern / label_names of its recipe), so evaluating
    # it on the same kind of folder labels the images as training did
    label_pattern: str | None = None
    label_names: dict[str, str] = {}
    # several labels per image (medsight.data.multilabel): a sigmoid per label, each with its
    # own temperature and threshold chosen on val; the rule reads an evaluation sheet as
    # training read its data
    multi_label: MultiLabelRule | None = None
    label_temperatures: list[float] = []
    label_thresholds: list[float] = []
    label_threshold_rules: list[str] = []
    # is an image like the training images? (domain.safetensors; None: bundles made before it)
    domain: DomainSpec | None = None
    recipe: str | None = None
    metrics: dict[str, Any] = {}
    created: str = ""
    medsight_version: str = ""

    @property
    def task(self) -> Task:
        """``multilabel`` (several labels per image), ``binary`` (two classes, one of them the
        disease class), else ``multiclass``."""
        if self.multi_label is not None:
            return "multilabel"
        if self.positive_class in self.class_names and len(self.class_names) == 2:
            return "binary"
        return "multiclass"

    def _per_label(self, values: list[float], default: float) -> np.ndarray:
        return np.asarray(values or [default] * len(self.class_names), dtype=np.float64)

    @property
    def positive_index(self) -> int | None:
        """The disease class's index in a binary task; None otherwise."""
        return self.class_names.index(self.positive_class) if self.task == "binary" else None

    def probabilities(self, logits: np.ndarray, calibrated: bool = True) -> np.ndarray:
        """Class probabilities from raw logits (a multi-label bundle: each label's own),
        temperature-scaled unless ``calibrated=False``."""
        if self.task == "multilabel":
            temperatures = self._per_label(self.label_temperatures, 1.0)
            return sigmoid(logits, temperatures if calibrated else 1.0)
        return softmax(logits, self.temperature if calibrated else 1.0)

    def decide(self, probs: np.ndarray) -> np.ndarray:
        """The predicted class index of each row, at the bundle's threshold when binary; for a
        multi-label bundle an (N, L) 0/1 array, each label at its own threshold."""
        if self.task == "multilabel":
            thresholds = self._per_label(self.label_thresholds, 0.5)
            return (probs >= thresholds).astype(np.int64)
        return decide(probs, self.positive_index, self.threshold)

    def require_single_label(self, what: str) -> None:
        """Refuse, in one line, what is only defined for one label per image."""
        if self.task == "multilabel":
            raise MedsightError(
                f"{what} compares one label per image; {self.recipe or self.model_name} is a "
                f"multi-label model ({', '.join(self.class_names)}): use evaluate, whose "
                "per_label figures score each label"
            )

    def findings(self, decided: np.ndarray) -> list[str]:
        """A multi-label decision row's labels (those at or above their thresholds)."""
        return [n for n, d in zip(self.class_names, decided, strict=True) if d]

    def decision_names(self, probs: np.ndarray) -> list[str]:
        """Each row's decision as text: its class, or a multi-label row's findings joined by
        ``|`` (``No Finding`` when none reaches its threshold)."""
        decided = self.decide(probs)
        if self.task == "multilabel":
            return ["|".join(self.findings(row)) or NO_FINDING for row in decided]
        return [self.class_names[i] for i in decided]

    def domain_scores(self, distances: np.ndarray | None, n: int) -> np.ndarray:
        """``domain_score`` per image (above 1: out of domain); NaN where the bundle has no
        domain guard, so nobody reads "in domain" into a check that was never made."""
        if self.domain is None or distances is None:
            return np.full(n, np.nan)
        return self.domain.scores(distances)

    def score(self, probs: np.ndarray) -> np.ndarray:
        """The one probability a row is summed up by: the disease class's (binary), else the
        predicted class's (multi-label: its most probable label's)."""
        pos = self.positive_index
        return probs[:, pos] if pos is not None else probs.max(axis=1)
