"""Labelled data to score a bundle on: the one value that ``evaluate``, ``compare`` and
``audit`` take (any folder, CSV or metadata sheet; one split of it; its class names mapped onto
the model's)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from medsight.data.labels import LabelRule
from medsight.data.multilabel import MultiLabelRule
from medsight.data.sources import ImageTable, load_table
from medsight.errors import DataError


def parse_class_map(text: str | None) -> dict[str, str]:
    """``"COVID-19=COVID,No Finding=normal"`` -> ``{"COVID-19": "COVID", ...}``."""
    if not text:
        return {}
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    if any(len(pair) != 2 or not pair[0].strip() or not pair[1].strip() for pair in pairs):
        raise DataError(f"--class-map {text!r}: use DATA_CLASS=MODEL_CLASS pairs, comma-separated")
    return {a.strip(): b.strip() for a, b in pairs}


def align_classes(
    table: ImageTable,
    class_names: list[str],
    class_map: Mapping[str, str] | None = None,
    drop_unknown: bool = False,
) -> ImageTable:
    """The table with labels renamed by ``class_map`` and indexed like the model's classes.

    Labels the model does not know are an error naming them, or dropped with ``drop_unknown``
    (e.g. a metadata sheet that lists findings the model was never trained on).
    """
    class_map = dict(class_map or {})
    bad_targets = sorted(set(class_map.values()) - set(class_names))
    if bad_targets:
        raise DataError(
            f"class map targets {bad_targets} are not classes of the model {class_names}"
        )
    frame = table.frame.assign(label=table.frame["label"].replace(class_map))
    unknown = sorted(set(frame["label"]) - set(class_names))
    if unknown and not drop_unknown:
        raise DataError(
            f"{table.source}: classes {unknown} are not known to the model (it predicts "
            f"{class_names}); map them with --class-map DATA=MODEL or leave them out with "
            "--drop-unknown-classes"
        )
    frame = frame[frame["label"].isin(class_names)].reset_index(drop=True)
    if frame.empty:
        raise DataError(f"{table.source}: no images of the model's classes {class_names}")
    return ImageTable(frame, list(class_names), table.source, table.skipped)


def source_names(paths: Sequence[str]) -> list[str]:
    """A short name per path: its folder or file name, or the whole path where two share one
    (``siteA/test`` and ``siteB/test`` are two sources, not one)."""
    names = [Path(p).name for p in paths]
    return [p if names.count(n) > 1 else n for p, n in zip(paths, names, strict=True)]


@dataclass(frozen=True)
class LabelledData:
    """Where the labelled images are, which split of them to keep, how their class names map
    onto a model's, and whether to leave out the images the model saw in training
    (``exclude_seen``; applied where the bundle is known, :mod:`medsight.evaluation.seen`).
    Several ``paths`` are several image sources (the audit's source probe tells them apart)."""

    paths: tuple[str, ...]
    split: str | None = None
    class_map: Mapping[str, str] = field(default_factory=dict)
    drop_unknown: bool = False
    exclude_seen: bool = False

    @classmethod
    def of(
        cls,
        data: str | Path | Sequence[str | Path] | LabelledData,
        split: str | None = None,
        class_map: Mapping[str, str] | None = None,
        drop_unknown: bool = False,
        exclude_seen: bool = False,
    ) -> LabelledData:
        """``data`` as it is when already a LabelledData (which then takes no options: it
        holds its own), else with the given options."""
        if isinstance(data, LabelledData):
            if split is not None or class_map or drop_unknown or exclude_seen:
                raise DataError(
                    "give split, class map, drop-unknown and exclude-seen either in the "
                    "LabelledData or as options, not both"
                )
            return data
        paths = [data] if isinstance(data, (str, Path)) else list(data)
        return cls(tuple(map(str, paths)), split, dict(class_map or {}), drop_unknown, exclude_seen)

    @property
    def name(self) -> str:
        return " + ".join(self.paths)

    def load(
        self,
        class_names: list[str],
        labels: LabelRule | None = None,
        multi: MultiLabelRule | None = None,
    ) -> ImageTable:
        """The labelled images (relabelled by ``labels``, the bundle's rule for labels in file
        paths; or read as several labels each by ``multi``, a multi-label bundle's rule),
        aligned with ``class_names``; with several paths, each row's ``source`` names its path
        (:func:`source_names`)."""
        if multi is not None and (self.class_map or self.drop_unknown):
            raise DataError(
                "--class-map and --drop-unknown-classes apply to single-label models; a "
                f"multi-label model reads its labels {class_names} from the sheet's columns"
            )
        tables = [self._load_one(path, class_names, labels, multi) for path in self.paths]
        if len(tables) == 1:
            return tables[0]
        frames = [
            t.frame.assign(source=name)
            for t, name in zip(tables, source_names(self.paths), strict=True)
        ]
        return ImageTable(
            pd.concat(frames, ignore_index=True),
            list(class_names),
            " + ".join(t.source for t in tables),
            [s for t in tables for s in t.skipped],
        )

    def _load_one(
        self,
        path: str,
        class_names: list[str],
        labels: LabelRule | None,
        multi: MultiLabelRule | None = None,
    ) -> ImageTable:
        table = load_table(path, multi=multi)
        if (
            multi is None
            and labels is not None
            and not set(table.frame["label"]) <= set(class_names)
        ):
            table = labels.apply(table)  # e.g. a run's splits.csv holds its labels already
        if self.split:
            present = sorted(table.frame["split"].dropna().unique())
            if self.split not in present:
                raise DataError(
                    f"{path}: no images in split {self.split!r} (splits present: {present})"
                )
            table = table.subset(self.split)
        if multi is not None:
            return table
        return align_classes(table, class_names, self.class_map, self.drop_unknown)
