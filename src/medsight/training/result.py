"""What ``medsight.train`` returns: the run folder, with its bundle and held-out figures typed.

A run *is* its folder, so :class:`TrainedRun` is path-like (``open(run / "splits.csv")``,
``os.fspath(run)``) and adds what a notebook wants next: ``run.bundle``, ``run.metrics``
(an :class:`~medsight.evaluation.results.Evaluation` of the held-out test split, or the pooled
out-of-fold figures of a k-fold run) and ``run.folds``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from medsight.evaluation.results import Evaluation, read_evaluation

__all__ = ["TrainedRun"]


@dataclass(frozen=True)
class TrainedRun(os.PathLike):
    folder: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "folder", Path(self.folder))

    @property
    def bundle(self) -> Path | None:
        """The model bundle folder; None for a k-fold run (each fold has its own)."""
        path = self.folder / "bundle"
        return path if (path / "bundle.json").is_file() else None

    @property
    def metrics(self) -> Evaluation:
        return read_evaluation(self.folder)

    @property
    def folds(self) -> list[TrainedRun]:
        """The fold runs of a k-fold run, in order (empty for a single run)."""
        found = [p for p in self.folder.glob("fold-*") if p.name.removeprefix("fold-").isdigit()]
        return [TrainedRun(p) for p in sorted(found, key=lambda p: int(p.name[5:]))]

    def __fspath__(self) -> str:
        return str(self.folder)

    def __truediv__(self, other: str | os.PathLike) -> Path:
        return self.folder / other

    def __str__(self) -> str:
        return str(self.folder)
