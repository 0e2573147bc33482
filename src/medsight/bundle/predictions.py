"""The predictions table shared by training, evaluate and predict: one row per image, the
calibrated probabilities and the decision at the bundle's threshold."""

from __future__ import annotations

import numpy as np
import pandas as pd

from medsight.bundle.spec import BundleSpec


def prediction_columns(spec: BundleSpec) -> list[str]:
    """``probability, prediction`` and ``p_<class>`` for every class (after ``path, label``)."""
    return ["probability", "prediction", *(f"p_{name}" for name in spec.class_names)]


def predictions_frame(frame: pd.DataFrame, probs: np.ndarray, spec: BundleSpec) -> pd.DataFrame:
    """``path, label, probability, prediction`` plus ``p_<class>`` for every class.

    ``probability`` is the spec's score (the disease class's probability for a binary bundle,
    else the predicted class's); ``prediction`` applies the bundle's decision threshold.
    """
    return pd.DataFrame(
        {
            "path": frame["path"].to_numpy(),
            "label": frame["label"].to_numpy(),
            # unrounded: rounding creates ties that change the ROC-AUC computed from this file
            "probability": spec.score(probs),
            "prediction": [spec.class_names[i] for i in spec.decide(probs)],
            **{f"p_{name}": probs[:, i] for i, name in enumerate(spec.class_names)},
        }
    )
