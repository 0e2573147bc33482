"""Multi-label tasks: several findings per image, each present, absent or not recorded.

Two sheet layouts give them: NIH ChestX-ray14's one column of ``|``-separated findings
(``No Finding``: none of them), and CheXpert's one column per finding holding 1, 0, -1
(uncertain) or nothing (not recorded). Both become one ``label:<name>`` column per finding in
the :class:`~medsight.data.sources.ImageTable`, holding ``"1"``, ``"0"`` or ``""``; those
columns travel through ``splits.csv`` unchanged. A finding that is not recorded is masked out
of the loss and of every figure, never counted as negative.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from medsight.errors import DataError

LABEL_PREFIX = "label:"
NO_FINDING = "No Finding"
POSITIVE, NEGATIVE, MISSING = "1", "0", ""


def label_column(name: str) -> str:
    return LABEL_PREFIX + name


def is_multi_label(frame: pd.DataFrame, names: list[str]) -> bool:
    """Whether a table's frame holds one ``label:<name>`` column per label."""
    return bool(names) and all(label_column(n) in frame.columns for n in names)


def targets_of(frame: pd.DataFrame, names: list[str]) -> np.ndarray:
    """(N, L) float32: 1 present, 0 absent, NaN not recorded."""
    out = np.full((len(frame), len(names)), np.nan, dtype=np.float32)
    for j, name in enumerate(names):
        values = frame[label_column(name)].astype(str).to_numpy()
        out[values == POSITIVE, j] = 1.0
        out[values == NEGATIVE, j] = 0.0
    return out


def summary_labels(targets: np.ndarray, names: list[str]) -> list[str]:
    """Each row's findings joined by ``|`` (``No Finding`` when none is present): the ``label``
    column people read, and what splits group rows by."""
    return [
        "|".join(n for n, v in zip(names, row, strict=True) if v == 1) or NO_FINDING
        for row in targets
    ]


def strata(targets: np.ndarray) -> np.ndarray:
    """A stratum per row for stratified splits: its rarest present finding (the last one for
    rows with none), so that every split gets its share of each rare finding."""
    positives = np.nansum(targets == 1, axis=0)
    rarity = np.where(targets == 1, positives[None, :], np.inf)
    has_any = np.isfinite(rarity).any(axis=1)
    return np.where(has_any, rarity.argmin(axis=1), targets.shape[1]).astype(np.int64)


class MultiLabelRule(BaseModel):
    """How a sheet's rows give several labels (a recipe's ``data.labels`` / ``multi_label`` /
    ``uncertain``; the bundle keeps it, so ``evaluate`` reads a sheet as training did)."""

    model_config = ConfigDict(extra="forbid")

    labels: list[str] = []  # the findings (their columns, or the tokens kept); []: every token
    uncertain: Literal["ignore", "zeros", "ones"] = "ignore"  # CheXpert's -1
    no_finding: str = NO_FINDING  # the token that says none of the findings is present

    @classmethod
    def of(cls, cfg) -> MultiLabelRule | None:
        """The rule of a recipe's ``data`` section; None for a single-label task."""
        labels = list(getattr(cfg, "labels", None) or [])
        if not (getattr(cfg, "multi_label", False) or labels):
            return None
        return cls(labels=labels, uncertain=getattr(cfg, "uncertain", "ignore"))

    def columns_layout(self, columns: list[str]) -> bool:
        """Whether a sheet holds one column per label (CheXpert; or medsight's own
        ``label:<name>`` columns of a ``splits.csv``) rather than ``|`` lists."""
        return bool(self.labels) and all(self._column(n, columns) for n in self.labels)

    @staticmethod
    def _column(name: str, columns: list[str]) -> str | None:
        return next((c for c in (name, label_column(name)) if c in columns), None)

    def from_columns(self, sheet: pd.DataFrame, where: str) -> dict[str, list[str]]:
        """``label:<name>`` columns from one column per finding (1, 0, -1 or empty)."""
        uncertain = {"ignore": MISSING, "zeros": NEGATIVE, "ones": POSITIVE}[self.uncertain]
        out = {}
        for name in self.labels:
            values = []
            column = self._column(name, list(sheet.columns))
            for number, raw in enumerate(sheet[column].astype(str).str.strip(), start=2):
                value = _number(raw)
                if raw and value is None:
                    raise DataError(
                        f"{where} line {number}: column {name!r} holds {raw!r}; a finding "
                        "column holds 1 (present), 0 (absent), -1 (uncertain) or nothing"
                    )
                values.append(
                    MISSING
                    if value is None
                    else POSITIVE
                    if value == 1
                    else NEGATIVE
                    if value == 0
                    else uncertain
                )
            out[label_column(name)] = values
        return out

    def from_lists(self, cells: pd.Series, where: str) -> tuple[list[str], dict[str, list[str]]]:
        """The labels and their ``label:<name>`` columns from ``|``-separated findings; a finding
        not among ``labels`` (when given) is left out, the row still counts as a negative of the
        others."""
        rows = [{t.strip() for t in str(cell).split("|") if t.strip()} for cell in cells]
        found = sorted(set().union(*rows) - {self.no_finding}) if rows else []
        names = self.labels or found
        if not names:
            raise DataError(f"{where}: no findings in its label column (only {self.no_finding!r})")
        out = {label_column(n): [POSITIVE if n in row else NEGATIVE for row in rows] for n in names}
        return names, out


def _number(raw: str) -> float | None:
    if raw == "" or raw.lower() == "nan":
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if value in (1.0, 0.0, -1.0) else None
