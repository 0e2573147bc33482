"""Percentile bootstrap confidence intervals that resample patients, not images.

Cells or X-rays of one patient are correlated: resampling images would make the intervals too
narrow. When patient ids exist, each resample draws patients with replacement and takes all of
their images; otherwise it draws images.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

DEFAULT_RESAMPLES = 1000


def default_resamples() -> int:
    """1,000 resamples, or ``MEDSIGHT_BOOTSTRAP`` (fewer makes quick checks quicker)."""
    return int(os.environ.get("MEDSIGHT_BOOTSTRAP", DEFAULT_RESAMPLES))


Statistic = Callable[[np.ndarray], dict[str, float | None]]


def group_indices(groups: Sequence | None, n: int) -> tuple[list[np.ndarray], str]:
    """Row indices per patient (or per image when ids are missing), and the unit's name."""
    if groups is None:
        return [np.array([i]) for i in range(n)], "image"
    ids = pd.Series(list(groups), dtype=object)
    missing = ids.map(lambda v: pd.isna(v) or not str(v).strip()).to_numpy(dtype=bool)
    if missing.all():
        return [np.array([i]) for i in range(n)], "image"
    # an image without a patient id is its own group
    labels = np.where(missing, [f"\0image-{i}" for i in range(n)], ids.astype(str))
    codes, _ = pd.factorize(labels)
    order = np.argsort(codes, kind="stable")
    bounds = np.cumsum(np.bincount(codes))[:-1]
    return np.split(order, bounds), "patient"


def resample_indices(groups: list[np.ndarray], resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Row indices of each resample: as many groups as there are, drawn with replacement (one
    at a time: all of them at once would cost resamples x rows x 8 bytes)."""
    rng = np.random.default_rng(seed)
    sizes = np.array([len(g) for g in groups])
    rows, starts = np.concatenate(groups), np.cumsum(sizes) - sizes
    for _ in range(resamples):
        drawn = rng.integers(0, len(groups), len(groups))
        # the drawn groups' rows one after another, as np.concatenate of them would give
        lengths = sizes[drawn]
        shift = np.repeat(starts[drawn] - (np.cumsum(lengths) - lengths), lengths)
        yield rows[shift + np.arange(len(shift))]


def bootstrap(
    statistic: Statistic,
    n: int,
    groups: Sequence | None = None,
    resamples: int | None = None,
    seed: int = 0,
    level: float = 0.95,
    p_values: bool = False,
) -> tuple[dict[str, dict[str, float | None]], dict[str, Any]]:
    """``{figure: {value, ci_low, ci_high}}`` for every figure ``statistic(rows)`` returns, and a
    record of how the intervals were made (seed, resamples, unit, level).

    With ``p_values`` (for differences between two models) each figure also gets the two-sided
    bootstrap p-value of 'the difference is zero': twice the share of resamples on the far side
    of zero (counting the observed difference, so it is never 0).

    Resamples where a figure is undefined (e.g. no positive patient drawn) are left out of that
    figure's interval and counted in the record.
    """
    resamples = default_resamples() if resamples is None else resamples
    point = statistic(np.arange(n))
    parts, unit = group_indices(groups, n)
    draws: dict[str, list[float]] = {k: [] for k in point}
    for rows in resample_indices(parts, resamples, seed) if n else []:
        for key, value in statistic(rows).items():
            if key in draws and value is not None:
                draws[key].append(value)
    alpha = (1 - level) / 2
    out: dict[str, dict[str, float | None]] = {}
    for key, value in point.items():
        values = np.asarray(draws[key])
        enough = value is not None and len(values) >= max(10, resamples // 2)
        out[key] = {
            "value": value,
            "ci_low": float(np.quantile(values, alpha)) if enough else None,
            "ci_high": float(np.quantile(values, 1 - alpha)) if enough else None,
        }
        if p_values:
            # (count + 1) / (B + 1): never exactly 0 from a finite number of resamples
            far = min((values <= 0).sum(), (values >= 0).sum())
            p = min(1.0, 2 * (far + 1) / (len(values) + 1))
            out[key]["p_value"] = float(p) if enough else None
    record = {
        "method": "percentile bootstrap",
        "unit": unit,
        "groups": len(parts),
        "resamples": resamples,
        "seed": seed,
        "level": level,
        "undefined": {k: resamples - len(v) for k, v in draws.items() if len(v) < resamples},
    }
    return out, record
