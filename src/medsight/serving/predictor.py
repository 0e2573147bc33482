"""The predictions table shared by training, evaluate and predict: one row per image, the
calibrated probabilities and the decision at the bundle's threshold."""

from __future__ import annotations

import numpy as np
import pandas as pd

from medsight.evaluation.metrics import decide
from medsight.serving.bundle import BundleSpec


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
