"""Typed evaluation results: what ``medsight.evaluate`` returns to Python callers.

``metrics.json`` stays the one stored form (any language reads it); :class:`Evaluation` is a
read-only view of it with the figures typed, so a notebook writes ``ev.figures["roc_auc"].ci_low``
instead of digging through nested dicts. It is also a mapping (``ev["accuracy"]``), as the
plain dict it replaces was.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medsight.errors import MedsightError
from medsight.evaluation.report import BINARY_ROWS, MULTICLASS_ROWS

__all__ = ["Evaluation", "Figure", "read_evaluation"]


@dataclass(frozen=True)
class Figure:
    """One figure with its 95 % confidence interval (None where it is undefined, e.g. NPV
    without negative predictions, or where no interval was computed)."""

    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None

    def __str__(self) -> str:
        if self.value is None:
            return "n/a"
        if self.ci_low is None or self.ci_high is None:
            return f"{self.value:.3f}"
        return f"{self.value:.3f} (95 % CI {self.ci_low:.3f} to {self.ci_high:.3f})"


class Evaluation(Mapping[str, Any]):
    """An evaluation's ``metrics.json`` (read-only) and where it was written.

    ``figures``: every scalar figure by name (``accuracy``, ``roc_auc``, ``sensitivity``, ...;
    a multi-label evaluation's ``<label>_roc_auc``, ...) with its CI; ``to_dict()``: a plain
    copy of the whole JSON.
    """

    def __init__(self, metrics: Mapping[str, Any], folder: str | Path | None = None):
        self._metrics = copy.deepcopy(dict(metrics))
        self.folder = None if folder is None else Path(folder)

    @property
    def figures(self) -> dict[str, Figure]:
        stored = self._metrics.get("figures") or {}
        found = {
            name: Figure(f.get("value"), f.get("ci_low"), f.get("ci_high"))
            for name, f in stored.items()
        }
        for name, value in self._metrics.items():  # figures without a bootstrap interval
            if name not in found and _is_number(value) and name in _POINT_FIGURES:
                found[name] = Figure(float(value))
        for label, row in (self._metrics.get("per_label") or {}).items():  # multi-label
            for name, f in row.items():
                if isinstance(f, Mapping) and "value" in f:
                    found[f"{label}_{name}"] = Figure(f["value"], f.get("ci_low"), f.get("ci_high"))
        return found

    @property
    def class_names(self) -> list[str]:
        return list(self._metrics.get("class_names") or [])

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._metrics)

    def __getitem__(self, key: str) -> Any:
        return self._metrics[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._metrics)

    def __len__(self) -> int:
        return len(self._metrics)

    def __repr__(self) -> str:
        keys = ("accuracy", "roc_auc", "macro_roc_auc")  # the last: multi-label
        shown = ", ".join(f"{k}={self.figures[k]}" for k in keys if k in self.figures)
        where = f" in {self.folder}" if self.folder else ""
        return f"Evaluation(n={self._metrics.get('n')}, {shown}){where}"


# The report's figures, which a metrics.json may also hold as plain numbers without an interval
# (k-fold pooling, older files), unlike counts, thresholds or timings.
_POINT_FIGURES = frozenset(key for key, _ in BINARY_ROWS + MULTICLASS_ROWS)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def read_evaluation(folder: str | Path) -> Evaluation:
    """The evaluation written in ``folder`` (its ``metrics.json``)."""
    path = Path(folder) / "metrics.json"
    try:
        return Evaluation(json.loads(path.read_text()), folder)
    except FileNotFoundError as exc:
        raise MedsightError(
            f"{path}: no metrics.json (is this an evaluation or run folder?)"
        ) from exc
    except (OSError, ValueError) as exc:
        raise MedsightError(f"{path}: cannot read it as JSON ({exc})") from exc
