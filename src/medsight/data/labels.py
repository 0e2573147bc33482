"""Labels from the file path (``data.label_pattern``) instead of the class folder or column.

Kermany's PNEUMONIA folder holds two diseases, told apart only by the file names
(``person1_bacteria_1.jpeg``, ``person3_virus_5.jpeg``); a regex on the path gives any data set
such finer labels. Images the pattern does not match keep the label their source gave them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from medsight.data.sources import ImageTable
from medsight.errors import ConfigError, DataError

__all__ = ["LabelRule"]


@dataclass(frozen=True)
class LabelRule:
    """``pattern``: searched in each image's path; its group ``label`` (else its first group,
    else the whole match) is the label, renamed by ``names`` (``{"bacteria": "BACTERIAL"}``)."""

    pattern: str | None = None
    names: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.names and not self.pattern:
            raise ConfigError("data.label_names renames what data.label_pattern finds: set both")
        if self.pattern:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ConfigError(
                    f"data.label_pattern {self.pattern!r} is not a regular expression: {exc}"
                ) from exc

    @classmethod
    def of(cls, cfg) -> LabelRule:
        """The rule of a recipe's ``data`` section (or a bundle's record of it)."""
        return cls(getattr(cfg, "label_pattern", None), dict(getattr(cfg, "label_names", {}) or {}))

    def found(self, path: str) -> str | None:
        """The label the pattern gives ``path``, or None where it does not match."""
        match = re.search(self.pattern, path) if self.pattern else None
        if match is None:
            return None
        groups = match.groupdict()
        raw = (
            groups.get("label")
            if "label" in groups
            else (match.group(1) if match.re.groups else match.group(0))
        )
        return None if raw is None else self.names.get(raw, raw)

    def apply(self, table: ImageTable) -> ImageTable:
        """``table`` relabelled; class names: the source's classes that keep images, then the
        new labels in the order ``names`` gives them (else sorted)."""
        if not self.pattern:
            return table
        found = table.frame["path"].map(self.found)
        if not found.notna().any():
            raise DataError(
                f"{table.source}: data.label_pattern {self.pattern!r} matches none of its "
                f"{len(table)} image paths (e.g. {table.frame['path'].iloc[0]})"
            )
        frame = table.frame.assign(label=found.fillna(table.frame["label"]))
        kept = [c for c in table.class_names if (frame["label"] == c).any()]
        ordered = [n for n in dict.fromkeys(self.names.values()) if n not in kept]
        new = set(found.dropna()) - set(kept) - set(ordered)
        class_names = kept + [n for n in ordered if (frame["label"] == n).any()] + sorted(new)
        return ImageTable(frame, class_names, table.source, table.skipped)
