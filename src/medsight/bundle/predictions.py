"""The predictions table shared by training, evaluate and predict: one row per image, the
calibrated probabilities and the decision at the bundle's threshold."""

from __future__ import annotations

import numpy as np
import pandas as pd

from medsight.bundle.spec import BundleSpec
from medsight.data.multilabel import LABEL_PREFIX


def prediction_columns(spec: BundleSpec) -> list[str]:
    """``probability, prediction``, ``p_<class>`` for every class, then ``in_domain,
    domain_score`` (after ``path, label``)."""
    classes = [f"p_{name}" for name in spec.class_names]
    return ["probability", "prediction", *classes, "in_domain", "domain_score"]


def in_domain_column(domain_score: np.ndarray) -> list[str]:
    """``true`` / ``false`` per image, empty where the bundle has no guard (cannot tell)."""
    return ["" if np.isnan(s) else ("true" if s <= 1.0 else "false") for s in domain_score]


def predictions_frame(
    frame: pd.DataFrame,
    probs: np.ndarray,
    spec: BundleSpec,
    domain_score: np.ndarray | None = None,
) -> pd.DataFrame:
    """``path, label, probability, prediction``, ``p_<class>`` for every class, ``in_domain``
    and ``domain_score``.

    ``probability`` is the spec's score (the disease class's probability for a binary bundle,
    else the predicted class's); ``prediction`` applies the bundle's decision threshold;
    ``domain_score`` above 1 means the image is unlike the training images (``in_domain`` is
    ``false``): its prediction is not to be trusted. Both are empty without a domain check.
    """
    if domain_score is None:
        domain_score = np.full(len(probs), np.nan)
    # a multi-label table keeps each label's truth (missing ones stay empty)
    truth = {c: frame[c].to_numpy() for c in frame.columns if c.startswith(LABEL_PREFIX)}
    return pd.DataFrame(
        {
            "path": frame["path"].to_numpy(),
            "label": frame["label"].to_numpy(),
            # unrounded: rounding creates ties that change the ROC-AUC computed from this file
            "probability": spec.score(probs),
            "prediction": spec.decision_names(probs),
            **{f"p_{name}": probs[:, i] for i, name in enumerate(spec.class_names)},
            "in_domain": in_domain_column(domain_score),
            "domain_score": domain_score,
            **truth,
        }
    )
