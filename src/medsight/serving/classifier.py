"""The Python predictor: ``medsight.load(BUNDLE)`` for a notebook or another program.

It answers one image (or a list) the way ``serve`` and ``predict`` do — same decoding and resize,
the bundle's calibrated probabilities, its decision at the stored threshold, its domain check —
and returns typed results instead of JSON. The REST API builds its answers from the same
:class:`Prediction`, so the two cannot disagree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from medsight.bundle import BundleSpec, bundle_folder, load_predictor
from medsight.data.io import image_from, to_pixels
from medsight.errors import MedsightError

if TYPE_CHECKING:
    from medsight.bundle import Bundle
    from medsight.explanation.cam import Explanation

__all__ = ["ImageClassifier", "ImageInput", "Prediction", "domain_warning"]

ImageInput = str | Path | bytes | Image.Image | np.ndarray


def domain_warning(in_domain: bool | None, class_names: Sequence[str]) -> str | None:
    """What to tell a person about the domain check's verdict (None: nothing to warn of)."""
    if in_domain is None:
        return (
            "This model has no domain check: it cannot tell whether the image is like its "
            "training images."
        )
    if in_domain:
        return None
    return (
        "This image does not look like the images the model was trained on "
        f"({', '.join(class_names)}); its answer is not to be trusted."
    )


@dataclass(frozen=True)
class Prediction:
    """One image's answer. ``in_domain`` False: unlike the training images, the decision is
    not to be trusted; None: the bundle has no domain guard, so nobody can tell. A multi-label
    bundle's ``decision`` is its ``findings`` joined by ``|`` (``No Finding``: none), each label
    decided at its own entry of ``thresholds``."""

    decision: str
    probabilities: dict[str, float]  # calibrated, by class (multi-label: each label's own)
    in_domain: bool | None
    domain_score: float | None  # above 1: out of domain
    domain_warning: str | None
    positive_class: str | None
    positive_probability: float | None
    threshold: float | None  # on the positive class's probability (binary bundles)
    threshold_rule: str
    findings: list[str] | None = None  # multi-label: the labels at or above their thresholds
    thresholds: dict[str, float] | None = None  # multi-label: each label's

    @classmethod
    def of(cls, spec: BundleSpec, probs: np.ndarray, domain_score: float) -> Prediction:
        """The answer for one row of calibrated probabilities and its domain score (NaN: no
        guard), by the bundle's own rules."""
        pos, task = spec.positive_index, spec.task
        in_domain = None if math.isnan(domain_score) else bool(domain_score <= 1.0)
        multi = task == "multilabel"
        if multi:
            rule = "each label at its own threshold: " + "; ".join(
                f"{n} {r}"
                for n, r in zip(spec.class_names, spec.label_threshold_rules, strict=False)
            )
        else:
            rule = spec.threshold_rule if task == "binary" else "most probable class"
        return cls(
            decision=spec.decision_names(probs[None])[0],
            probabilities=dict(zip(spec.class_names, map(float, probs), strict=True)),
            in_domain=in_domain,
            domain_score=None if in_domain is None else float(domain_score),
            domain_warning=domain_warning(in_domain, spec.class_names),
            positive_class=spec.positive_class,
            positive_probability=float(probs[pos]) if pos is not None else None,
            threshold=spec.threshold if task == "binary" else None,
            threshold_rule=rule,
            findings=spec.findings(spec.decide(probs[None])[0]) if multi else None,
            thresholds=(
                dict(zip(spec.class_names, map(float, spec.label_thresholds), strict=True))
                if multi and spec.label_thresholds
                else None
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ImageClassifier:
    """A loaded bundle that answers images: ``predict(x)`` / ``predict_many(xs)`` and
    ``explain(x)``. ``x`` is a path, encoded bytes (PNG, JPEG, DICOM, ...), a PIL image or an
    array. Predictions run on the bundle's current ONNX export when it has one (``engine``
    says which), explanations on its PyTorch model, loaded on the first ``explain``: until
    then an exported bundle answers without importing PyTorch."""

    def __init__(self, bundle: str | Path, prefer_onnx: bool = True, precision: str | None = None):
        self.folder = bundle_folder(bundle)
        self._predictor = load_predictor(self.folder, prefer_onnx, precision)
        self._torch: Bundle | None = self._predictor if self._predictor.engine == "torch" else None

    @property
    def spec(self) -> BundleSpec:
        return self._predictor.spec

    @property
    def class_names(self) -> list[str]:
        return list(self.spec.class_names)

    @property
    def engine(self) -> str:
        return self._predictor.engine

    def pixels(self, image: ImageInput) -> np.ndarray:
        """``image`` decoded and resized as the model sees it: (H, W, C) uint8."""
        spec = self.spec
        decoded = image_from(image, draft_size=spec.image_size)
        return np.array(to_pixels(decoded, spec.image_size, spec.channels))

    def predict(self, image: ImageInput) -> Prediction:
        return self.predict_many([image])[0]

    def predict_many(
        self, images: Sequence[ImageInput], batch_size: int | None = None
    ) -> list[Prediction]:
        """Answers in the order given; an unreadable image raises, naming it. ``batch_size``
        images per model call (None: by input size)."""
        if isinstance(images, str | bytes | Path | Image.Image | np.ndarray):
            raise MedsightError("predict_many takes a list of images; use predict for one")
        if not images:
            return []
        pixels = np.stack([self.pixels(image) for image in images])
        answers = self._predictor.answer(pixels, batch_size)
        return [
            Prediction.of(self.spec, probs, float(score))
            for probs, score in zip(answers.probs, answers.domain_score, strict=True)
        ]

    def explain(
        self, image: ImageInput, target: str | int | None = None, method: str = "gradcam"
    ) -> Explanation:
        """Where the model looks for ``target`` (default: the class it decides) in ``image``:
        the heat-map, an overlay and its faithfulness score."""
        from medsight.bundle import load_bundle
        from medsight.explanation.cam import explain

        if self._torch is None:
            self._torch = load_bundle(self.folder)
        return explain(self._torch, self.pixels(image), target, method)

    def __repr__(self) -> str:
        names, engine = self.class_names, self.engine
        return f"ImageClassifier({str(self.folder)!r}, classes={names}, engine={engine!r})"
