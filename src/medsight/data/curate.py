"""Curation of tutorial (d) (docs/tutorials.md): COVID-19 chest X-rays of the ieee8023
collection against Kermany images.

As the tutorial: PA X-rays whose finding is exactly ``COVID-19`` (``COVID-19, ARDS`` is left out
and counted in the summary), the latest month held out, Kermany images reservoir-sampled for class
balance. Fixed: rows without an image are skipped and listed, and no patient has images both in
the training pool (split None) and the held-out final validation set (split ``"test"``).
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from medsight.data.io import is_image_file
from medsight.data.patients import patient_from_filename
from medsight.data.sources import COLUMNS, ImageTable
from medsight.errors import DataError
from medsight.fsutil import atomic_write_text

log = logging.getLogger(__name__)

Task = Literal["covid-vs-normal", "covid-vs-pneumonia"]
COVID = "COVID-19"
OTHER_CLASS = {
    "covid-vs-normal": ("normal", "NORMAL"),
    "covid-vs-pneumonia": ("pneumonia", "PNEUMONIA"),
}
METADATA_COLUMNS = ("patientid", "finding", "view", "modality", "date", "folder", "filename")
# Non-COVID pneumonia findings of the collection ("ARDS", "todo" and "No Finding" are not).
OTHER_PNEUMONIA = frozenset(
    {"SARS", "Streptococcus", "Pneumocystis", "Pneumonia", "Klebsiella", "Legionella", "Lipoid",
     "Mycoplasma Bacterial Pneumonia", "Varicella", "E.Coli", "Bacterial", "Chlamydophila",
     "Influenza"}
)  # fmt: skip
# The collection mixes date styles; a bare year ("2020") has no month, so it cannot be dated.
DATE_FORMATS = ("%B %d, %Y", "%b %d, %Y", "%m/%d/%Y", "%m/%d/%y", "%Y-%m-%d", "%B %Y", "%b %Y")
MANIFEST_COLUMNS = [*COLUMNS, "source", "date", "reason"]

Row = dict[str, Any]


@dataclass
class Curation:
    """The chosen images (table and manifest), what was left out and why, and the counts."""

    table: ImageTable
    skipped: list[tuple[str, str]]  # (path, reason)
    manifest: pd.DataFrame
    summary: dict[str, Any]


def curate_covid(
    covid_root: str | Path,
    kermany_root: str | Path,
    task: Task = "covid-vs-normal",
    seed: int = 42,
    holdout_per_class: int = 20,
    other_source: Literal["kermany", "metadata"] = "kermany",
) -> Curation:
    """Tutorial (d)'s data: COVID-19 vs normal, or COVID-19 vs other pneumonia.

    ``other_source="metadata"`` (pneumonia task only) takes the other class from the
    collection's own non-COVID pneumonia X-rays, so both classes share a source and a model
    cannot score by telling Guangzhou paediatric scans from the collection's (DeGrave 2021).
    """
    if task not in OTHER_CLASS:
        raise DataError(f"unknown task {task!r} (use {' or '.join(OTHER_CLASS)})")
    if other_source == "metadata" and task != "covid-vs-pneumonia":
        raise DataError("other_source='metadata' only applies to task 'covid-vs-pneumonia'")
    covid_root, kermany_root = Path(covid_root), Path(kermany_root)
    sheet = read_metadata(covid_root / "metadata.csv")
    rng = random.Random(seed)
    skipped: list[tuple[str, str]] = []
    positives = _metadata_rows(sheet, covid_root, {COVID}, COVID, skipped)
    latest = max(filter(None, (_month(r["date"]) for r in positives)), default=None)
    held = [r for r in positives if latest and _month(r["date"]) == latest]
    train = _rest_of_patients(positives, held, "latest-month", skipped)
    test = _tag(held, "test", f"latest month {latest} held out (final validation set)")

    other, folder = OTHER_CLASS[task]
    if other_source == "metadata":
        pool = _metadata_rows(sheet, covid_root, OTHER_PNEUMONIA, other, skipped)
        sizes = Counter(r["patient"] for r in pool)
        singles = [r for r in pool if sizes[r["patient"]] == 1]  # holding these out costs nothing
        other_test = _reservoir(singles if len(singles) >= holdout_per_class else pool,
                                holdout_per_class, rng)  # fmt: skip
        other_train = _rest_of_patients(pool, other_test, "held-out", skipped)
        how = f"reservoir sample seed {seed} of non-COVID pneumonia PA X-rays"
    else:
        pool = _kermany_pool(kermany_root, folder, other)
        other_train = _reservoir(pool, len(train), rng)
        used = {r["patient"] for r in other_train}
        other_test = _reservoir(
            [r for r in pool if r["patient"] not in used], holdout_per_class, rng
        )
        how = f"reservoir sample seed {seed} from Kermany train/{folder}"
    if len(other_test) < holdout_per_class:
        raise DataError(
            f"only {len(other_test)} {other} images left to hold out, need {holdout_per_class}"
        )
    covid_reason = f"{COVID} PA X-ray"
    if len(other_train) < len(train):  # balance the classes: sample the larger one down
        log.warning("only %d %s images: sampling COVID-19 positives down", len(other_train), other)
        train = _reservoir(train, len(other_train), rng)
        covid_reason += f", reservoir sample seed {seed} to balance the classes"
    other_train = _reservoir(other_train, len(train), rng)
    train = _tag(train, None, covid_reason)
    other_rows = _tag(other_train, None, how) + _tag(
        other_test, "test", f"held out, {how}, patients not in the training pool"
    )
    if skipped:
        log.warning("%d metadata.csv rows skipped: %s", len(skipped), [p for p, _ in skipped])
    manifest = pd.DataFrame(train + test + other_rows, columns=MANIFEST_COLUMNS)
    source = f"ieee8023 covid-chestxray-dataset + {other_source} ({task}, seed {seed})"
    table = ImageTable(manifest[[*COLUMNS, "source"]].copy(), [COVID, other], source, skipped)
    summary: dict[str, Any] = {"task": task, "seed": seed, "other_source": other_source}
    summary |= _summary(sheet, positives, skipped, latest, manifest)
    return Curation(table, skipped, manifest, summary)


def write_manifest(curation: Curation, path: str | Path) -> Path:
    """The manifest as CSV; ``from_csv`` reads it back (path, label, patient, split)."""
    path = Path(path)
    atomic_write_text(path, curation.manifest.to_csv(index=False))
    return path


def read_metadata(csv: Path) -> pd.DataFrame:
    """The collection's ``metadata.csv`` as text, with the columns the curation needs checked."""
    if not csv.is_file():
        raise DataError(
            f"{csv}: metadata.csv not found (give the ieee8023 covid-chestxray-dataset folder, "
            "holding metadata.csv and images/)"
        )
    try:
        sheet = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{csv}: not a readable CSV file ({exc})") from exc
    missing = [c for c in METADATA_COLUMNS if c not in sheet.columns]
    if missing:
        raise DataError(
            f"{csv}: missing column(s) {', '.join(missing)} "
            f"(columns are: {', '.join(map(str, sheet.columns))})"
        )
    for column in METADATA_COLUMNS:
        sheet[column] = sheet[column].str.strip()
    return sheet


def _month(text: str | None) -> str | None:
    """``'2020-03'`` for a date that names its month; None for blanks and bare years."""
    for fmt in DATE_FORMATS:
        try:
            return datetime.strptime(text or "", fmt).strftime("%Y-%m")
        except ValueError:
            continue
    return None


def _metadata_rows(
    sheet: pd.DataFrame, root: Path, findings: set[str] | frozenset[str], label: str,
    skipped: list[tuple[str, str]],
) -> list[Row]:  # fmt: skip
    """PA X-ray rows with one of ``findings`` whose image exists (:func:`metadata_images`)."""
    keep = (
        (sheet["modality"] == "X-ray") & sheet["finding"].isin(findings) & (sheet["view"] == "PA")
    )
    return metadata_images(sheet, root, keep, label, skipped)


def metadata_images(
    sheet: pd.DataFrame, root: Path, keep: pd.Series, label: str, skipped: list[tuple[str, str]]
) -> list[Row]:
    """The ``keep`` rows whose image exists (each row's sheet index under ``record``); the
    others go to ``skipped``.

    A file listed twice (the snapshot lists some under two patient ids) is used once, and the
    two ids are merged into one patient so that the image cannot sit on both sides of a split.
    """
    rows: dict[str, Row] = {}
    alias: dict[str, str] = {}
    for number, record in sheet[keep].iterrows():
        path, patient = root / record["folder"] / record["filename"], f"covid-{record['patientid']}"
        where = f"metadata.csv row {number + 1} ({record['finding']})"
        if str(path) in rows:
            alias[patient] = rows[str(path)]["patient"]
            skipped.append((str(path), f"{where}: same file as an earlier row, used once"))
        elif not path.is_file():
            skipped.append((str(path), f"{where}: image file is missing"))
        else:
            row = _row(path, label, patient, "ieee8023", record["date"] or None)
            rows[str(path)] = {**row, "record": number}
    return [{**r, "patient": alias.get(r["patient"], r["patient"])} for r in rows.values()]


def _kermany_pool(root: Path, folder: str, label: str) -> list[Row]:
    """Kermany ``train/<folder>`` images sorted by name, so that a seed picks the same files."""
    directory = next((d for d in (root / "train" / folder, root / folder) if d.is_dir()), None)
    if directory is None:
        raise DataError(f"{root}: no train/{folder}/ folder (give the Kermany chest_xray folder)")
    files = sorted(f for f in directory.iterdir() if f.is_file() and is_image_file(f))
    return [
        _row(f, label, patient_from_filename(f) or f"kermany-{f.stem}", "kermany")
        for f in files
        if not f.name.startswith(".")
    ]


def _row(path: Path, label: str, patient: str, source: str, date: str | None = None) -> Row:
    return {"path": str(path), "label": label, "patient": patient, "source": source, "date": date}


def _reservoir(items: Sequence[Row], k: int, rng: random.Random) -> list[Row]:
    """Algorithm R, as the tutorial sampled: one pass, every item kept with chance k/n."""
    sample = list(items[:k])
    for i in range(k, len(items)):
        j = rng.randint(0, i)
        if j < k:
            sample[j] = items[i]
    return sorted(sample, key=lambda r: r["path"])


def _rest_of_patients(
    rows: list[Row], held: list[Row], what: str, skipped: list[tuple[str, str]]
) -> list[Row]:
    """The rows not held out, less those of held-out patients (listed in ``skipped``)."""
    patients = {r["patient"] for r in held}
    rest = [r for r in rows if r not in held]
    skipped += [(r["path"], f"patient {r['patient']} has {what} images held out")
                for r in rest if r["patient"] in patients]  # fmt: skip
    return [r for r in rest if r["patient"] not in patients]


def _tag(rows: list[Row], split: str | None, reason: str) -> list[Row]:
    return [{**r, "split": split, "reason": reason} for r in rows]


def _summary(
    sheet: pd.DataFrame, positives: list[Row], skipped: list[tuple[str, str]], latest: str | None,
    manifest: pd.DataFrame,
) -> dict[str, Any]:  # fmt: skip
    """The counts that justify the curation: before filtering, after it, and per class/split."""

    def counts(values: pd.Series) -> dict[str, int]:
        return {(k or "(blank)"): int(v) for k, v in values.value_counts().items()}

    pa_xray = sheet[(sheet["modality"] == "X-ray") & (sheet["view"] == "PA")]
    variants = pa_xray[
        pa_xray["finding"].str.contains(COVID, regex=False) & (pa_xray["finding"] != COVID)
    ]
    split = manifest["split"].fillna("train_pool")
    return {
        "metadata_rows": len(sheet),
        "finding": counts(sheet["finding"]),
        "view": counts(sheet["view"]),
        "modality": counts(sheet["modality"]),
        "covid_pa_xray_rows": int((pa_xray["finding"] == COVID).sum()),
        "covid_with_image": len(positives),
        "skipped": len(skipped),
        "covid_variants_excluded": counts(variants["finding"]),
        "latest_month": latest,
        "undated_positives": sum(_month(r["date"]) is None for r in positives),
        "counts": {
            label: counts(split[manifest["label"] == label]) for label in manifest["label"].unique()
        },
    }
