"""Predictions for a table of images with a bundle: decode as in training, then score."""

from __future__ import annotations

import numpy as np
import pandas as pd

from medsight.data.dataset import decode_images
from medsight.data.sources import ImageTable
from medsight.evaluation.metrics import decide
from medsight.progress import Progress
from medsight.serving.bundle import Bundle, BundleSpec


def predict_table(
    bundle: Bundle, table: ImageTable, batch_size: int = 128
) -> tuple[pd.DataFrame, np.ndarray, list[tuple[str, str]]]:
    """Score every readable image of ``table``.

    Returns the predictions frame (:func:`predictions_frame`), the class probability matrix
    aligned with it, and the unreadable files as ``(path, reason)``.
    """
    spec = bundle.spec
    pixels, failures = decode_images(list(table.frame["path"]), spec.image_size, spec.channels)
    bad = {path for path, _ in failures}
    keep = ~table.frame["path"].isin(bad).to_numpy()
    pixels, frame = pixels[keep], table.frame[keep].reset_index(drop=True)
    probs = np.zeros((len(pixels), len(spec.class_names)), dtype=np.float32)
    with Progress(len(pixels), "predict", "img") as bar:
        for start in range(0, len(pixels), batch_size):
            chunk = pixels[start : start + batch_size]
            probs[start : start + len(chunk)] = bundle.predict_proba(chunk, batch_size)
            bar.update(len(chunk))
    return predictions_frame(frame, probs, spec), probs, failures


def predictions_frame(frame: pd.DataFrame, probs: np.ndarray, spec: BundleSpec) -> pd.DataFrame:
    """``path, label, probability, prediction`` plus ``p_<class>`` for every class.

    ``probability`` is the positive (disease) class's probability for a binary bundle, else the
    predicted class's; ``prediction`` applies the bundle's decision threshold.
    """
    pos = spec.positive_index
    predicted = decide(probs, pos, spec.threshold)
    return pd.DataFrame(
        {
            "path": frame["path"].to_numpy(),
            "label": frame["label"].to_numpy(),
            # unrounded: rounding creates ties that change the ROC-AUC computed from this file
            "probability": probs[:, pos] if pos is not None else probs.max(axis=1),
            "prediction": [spec.class_names[i] for i in predicted],
            **{f"p_{name}": probs[:, i] for i, name in enumerate(spec.class_names)},
        }
    )
