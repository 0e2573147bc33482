"""The ``covid-findings`` data: several findings per X-ray from the ieee8023 ``metadata.csv``.

Each frontal X-ray gets the collection's ``finding`` grouped into COVID-19 / other viral /
bacterial / fungal / ARDS, and the outcomes ``intubated`` and ``went_icu`` where the sheet
records them (``Y`` / ``N``; blank, ``?`` and notes such as ``Not visible`` are missing, never
negative). A finding of ``todo`` leaves every finding label missing; an unspecified
``Pneumonia`` says it is not COVID-19 but leaves its cause missing. Patients are the sheet's
``patientid``; the usual patient-grouped split follows.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from medsight.data.curate import Curation, metadata_images, read_metadata
from medsight.data.multilabel import (
    MISSING,
    NEGATIVE,
    POSITIVE,
    label_column,
    summary_labels,
    targets_of,
)
from medsight.data.sources import COLUMNS, ImageTable
from medsight.errors import DataError

log = logging.getLogger(__name__)

FRONTAL_VIEWS = frozenset({"PA", "AP", "AP Supine", "AP Erect"})
# the collection's findings (flat, or its later "Pneumonia/Viral/COVID-19" paths), by group
CAUSES = {
    "COVID-19": {"COVID-19"},
    "other_viral": {"SARS", "MERS", "MERS-CoV", "Varicella", "Influenza", "Herpes"},
    "bacterial": {
        "Streptococcus", "Klebsiella", "Mycoplasma Bacterial Pneumonia", "Mycoplasma",
        "Legionella", "E.Coli", "Chlamydophila", "Staphylococcus", "Nocardia", "Pseudomonas",
        "Tuberculosis",
    },
    "fungal": {"Pneumocystis", "Aspergillosis", "Histoplasmosis", "Cryptococcus"},
}  # fmt: skip
# a path's group level, or a finding that names only the group ("Bacterial")
GROUP_WORDS = {"Viral": "other_viral", "Bacterial": "bacterial", "Fungal": "fungal"}
OUTCOMES = ("intubated", "went_icu")
LABELS = [*CAUSES, "ARDS", *OUTCOMES]
UNKNOWN_FINDINGS = frozenset({"todo", "", "?"})
NO_FINDING = "No Finding"


def finding_values(finding: str) -> dict[str, str]:
    """The five finding labels of one ``finding`` cell ("1", "0" or "" for missing)."""
    tokens = {t.strip() for part in finding.split(",") for t in part.split("/") if t.strip()}
    if not tokens or tokens <= UNKNOWN_FINDINGS:
        return dict.fromkeys([*CAUSES, "ARDS"], MISSING)
    found = {name for name, members in CAUSES.items() if tokens & members}
    found |= {GROUP_WORDS[t] for t in tokens & set(GROUP_WORDS)}
    if "COVID-19" in found:  # "Pneumonia/Viral/COVID-19": the viral level is COVID-19's
        found.discard("other_viral")
    values = {name: POSITIVE if name in found else NEGATIVE for name in CAUSES}
    values["ARDS"] = POSITIVE if "ARDS" in tokens else NEGATIVE
    if "Pneumonia" in tokens and not found:
        # pneumonia of unstated cause: not COVID-19 (the sheet would say), cause unknown
        values.update({name: MISSING for name in CAUSES if name != "COVID-19"})
    known = set().union(*CAUSES.values(), GROUP_WORDS) | {"ARDS", NO_FINDING, "Lipoid", "Pneumonia"}
    if tokens - known:
        log.info("metadata finding %r: %s not grouped (counted as absent)", finding, tokens - known)
    return values


def outcome_value(cell: str) -> str:
    return {"Y": POSITIVE, "N": NEGATIVE}.get(cell.strip(), MISSING)


def curate_findings(covid_root: str | Path) -> Curation:
    """Every frontal X-ray of the collection with its findings and outcomes as labels."""
    root = Path(covid_root)
    sheet = read_metadata(root / "metadata.csv")
    absent = [c for c in OUTCOMES if c not in sheet.columns]
    if absent:
        raise DataError(f"{root / 'metadata.csv'}: no column {absent[0]!r} (an outcome label)")
    keep = (sheet["modality"] == "X-ray") & sheet["view"].isin(FRONTAL_VIEWS)
    skipped: list[tuple[str, str]] = []
    rows = metadata_images(sheet, root, keep, "", skipped)
    for row in rows:
        record = sheet.loc[row["record"]]
        values = finding_values(record["finding"])
        values |= {name: outcome_value(str(record[name])) for name in OUTCOMES}
        row.update({label_column(n): values[n] for n in LABELS}, split=None)
    if not rows:
        raise DataError(f"{root}: no frontal X-ray of metadata.csv has its image under {root}")
    frame = pd.DataFrame(rows)
    frame["label"] = summary_labels(targets_of(frame, LABELS), LABELS)
    if skipped:
        log.warning("%d metadata.csv rows skipped: %s", len(skipped), [p for p, _ in skipped[:5]])
    columns = [*COLUMNS, "source", *map(label_column, LABELS)]
    table = ImageTable(frame[columns].copy(), list(LABELS), f"ieee8023 findings {root}", skipped)
    manifest = frame[[*COLUMNS, "source", "date", *map(label_column, LABELS)]]
    summary = {
        "task": "covid-findings",
        "images": len(frame),
        "patients": int(frame["patient"].nunique()),
        "skipped": len(skipped),
        "labels": {
            n: {
                "positive": int((frame[label_column(n)] == POSITIVE).sum()),
                "negative": int((frame[label_column(n)] == NEGATIVE).sum()),
                "missing": int((frame[label_column(n)] == MISSING).sum()),
            }
            for n in LABELS
        },
    }
    return Curation(table, skipped, manifest, summary)
