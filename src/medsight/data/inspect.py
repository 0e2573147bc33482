"""``medsight data inspect``: what is in a dataset before anyone trains on it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medsight.data.io import content_sha256, read_image
from medsight.data.multilabel import MultiLabelRule
from medsight.data.patients import DEFAULT_RULE, PatientCoverage, PatientRule
from medsight.data.sources import load_table
from medsight.data.splits import find_leakage
from medsight.data.summary import data_summary
from medsight.errors import UnreadableImageError
from medsight.progress import Progress
from medsight.threads import each_in_threads


@dataclass
class Inspection:
    """Everything ``data inspect`` found; ``text()`` renders it as readable tables."""

    source: str
    summary: dict[str, Any]
    sizes: Counter = field(default_factory=Counter)  # (width, height) -> count
    modes: Counter = field(default_factory=Counter)
    duplicates: list[list[str]] = field(default_factory=list)  # groups of identical files
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    leakage: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            **self.summary,
            "sizes": {f"{w}x{h}": n for (w, h), n in self.sizes.most_common()},
            "modes": dict(self.modes),
            "duplicates": self.duplicates,
            "unreadable": [{"path": p, "reason": r} for p, r in self.unreadable],
            "leakage": self.leakage,
        }

    def patients_line(self) -> str:
        """How many images have a patient id and from which rule; those without one are split
        by image, which the user should know before training."""
        coverage = PatientCoverage(self.summary["n_images"], self.summary["patient_ids"])
        note = coverage.note()
        return coverage.text() + (f"; a training would {note}" if note else "")

    def text(self) -> str:
        s = self.summary
        names = s["class_names"]
        width = max(8, *(len(n) for n in names))
        head = f"{'split':<8}" + "".join(f"{n:>{width + 2}}" for n in names)
        lines = [
            f"source: {self.source}",
            f"images: {s['n_images']}   patient groups: {s['n_patients']}",
            self.patients_line(),
            *(["images with each label (multi-label):"] if s.get("multi_label") else []),
            "",
            head + f"{'total':>9}{'patients':>10}",
        ]
        for row in s["splits"]:
            cells = "".join(f"{n:>{width + 2}}" for n in row["counts"])
            lines.append(f"{row['split']:<8}{cells}{row['total']:>9}{row['patients']:>10}")
        ws = [w for w, _ in self.sizes]
        hs = [h for _, h in self.sizes]
        if ws:
            lines += [
                "",
                f"image sizes: {len(self.sizes)} distinct, width {min(ws)}-{max(ws)}, "
                f"height {min(hs)}-{max(hs)}; most common: "
                + ", ".join(f"{w}x{h} ({n})" for (w, h), n in self.sizes.most_common(3)),
            ]
        lines.append("modes: " + ", ".join(f"{m} ({n})" for m, n in self.modes.most_common()))
        lines.append(
            f"exact duplicates: {len(self.duplicates)} group(s)"
            + "".join(f"\n  {' = '.join(g)}" for g in self.duplicates[:10])
        )
        lines.append(
            f"unreadable files: {len(self.unreadable)}"
            + "".join(f"\n  {p}: {r}" for p, r in self.unreadable)
        )
        if self.leakage:
            lines.append(f"leakage between given splits: {self.leakage}")
        return "\n".join(lines)


def inspect_data(
    path: str | Path,
    threads: int = 2,
    patients: PatientRule = DEFAULT_RULE,
    multi: MultiLabelRule | None = None,
) -> Inspection:
    """Count, decode and hash every image of a data source (patient ids by ``patients``, so a
    recipe's rule can be tried before training; several labels per image by ``multi``)."""
    table = load_table(path, patients=patients, multi=multi)
    frame = table.frame
    result = Inspection(table.source, data_summary(table), unreadable=list(table.skipped))
    hashes: list[str] = [""] * len(frame)
    shapes: list[tuple[tuple[int, int], str] | None] = [None] * len(frame)

    def one(i: int) -> None:
        file = frame["path"].iloc[i]
        try:
            hashes[i] = content_sha256(file)
            image = read_image(file)
            shapes[i] = (image.size, image.mode)
        except (UnreadableImageError, OSError) as exc:
            result.unreadable.append((file, getattr(exc, "reason", str(exc))))

    with Progress(len(frame), "inspect", "img") as bar:
        for _ in each_in_threads(one, len(frame), threads):
            bar.update()
    result.sizes.update(size for size, _ in filter(None, shapes))
    result.modes.update(mode for _, mode in filter(None, shapes))
    # a file that could not be read has no hash: it is listed as unreadable, never compared
    frame = frame.assign(sha256=[digest or None for digest in hashes])
    groups = frame.groupby("sha256")["path"]
    result.duplicates = [sorted(paths) for _, paths in groups if len(paths) > 1]
    if table.has_splits:
        result.leakage = find_leakage(frame).summary()
    return result
