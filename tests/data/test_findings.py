"""The covid-findings labels from the ieee8023 metadata.csv (data/findings.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medsight.config import load_recipe
from medsight.data.findings import LABELS, curate_findings, finding_values, outcome_value
from medsight.data.splits import assign_splits

CASES = [
    # finding cell -> COVID-19, other_viral, bacterial, fungal, ARDS ("" = missing)
    ("COVID-19", "1 0 0 0 0"),
    ("COVID-19, ARDS", "1 0 0 0 1"),
    ("Pneumonia/Viral/COVID-19", "1 0 0 0 0"),
    ("Streptococcus", "0 0 1 0 0"),
    ("Pneumonia/Bacterial/Klebsiella", "0 0 1 0 0"),
    ("Pneumocystis", "0 0 0 1 0"),
    ("SARS", "0 1 0 0 0"),
    ("No Finding", "0 0 0 0 0"),
    ("Pneumonia", "0 - - - 0"),  # cause not stated: not COVID-19, the rest unknown
    ("todo", "- - - - -"),
    ("", "- - - - -"),
]


@pytest.mark.parametrize(("cell", "expected"), CASES)
def test_finding_groups(cell: str, expected: str) -> None:
    values = finding_values(cell)
    got = " ".join(
        values[n] or "-" for n in ["COVID-19", "other_viral", "bacterial", "fungal", "ARDS"]
    )
    assert got == expected


@pytest.mark.parametrize(
    ("cell", "value"), [("Y", "1"), ("N", "0"), ("", ""), ("?", ""), ("Not visible", "")]
)
def test_outcomes_are_missing_unless_recorded(cell: str, value: str) -> None:
    assert outcome_value(cell) == value


@pytest.fixture(scope="module")
def findings(datasets_dir: Path):
    folder = datasets_dir / "covid"
    if not (folder / "metadata.csv").is_file():
        pytest.skip(f"ieee8023 collection not found at {folder}")
    return curate_findings(folder)


def test_the_real_sheet_gives_every_label_with_missing_outcomes(findings, datasets_dir) -> None:
    table = findings.table
    assert table.multi_label and table.class_names == LABELS
    targets = table.targets
    assert len(table) > 500 and table.frame["patient"].notna().all()
    for j, name in enumerate(LABELS):
        assert (targets[:, j] == 1).sum() >= 10, name
    # outcomes are recorded for a minority of X-rays: the rest are missing, not negative
    intubated = targets[:, LABELS.index("intubated")]
    assert np.isnan(intubated).mean() > 0.4 and (intubated == 0).sum() > 20
    assert findings.summary["labels"]["intubated"]["missing"] == int(np.isnan(intubated).sum())
    # only frontal X-rays: no CT, no lateral view
    sheet = pd.read_csv(datasets_dir / "covid" / "metadata.csv")
    others = sheet[(sheet["modality"] != "X-ray") | sheet["view"].isin(["L", "Axial", "Coronal"])]
    used = {Path(p).name for p in table.frame["path"]}
    assert len(others) > 50 and not used & set(others["filename"])


def test_the_recipe_split_has_three_labels_positive_in_every_split(findings) -> None:
    recipe = load_recipe("covid-findings")
    cfg = recipe.data
    table = assign_splits(
        findings.table, cfg.val_fraction, cfg.test_fraction, recipe.train.seed, by="patient"
    )
    split = table.frame["split"].to_numpy()
    everywhere = [
        name
        for j, name in enumerate(LABELS)
        if all((table.targets[split == s, j] == 1).any() for s in ("train", "val", "test"))
    ]
    assert len(everywhere) >= 3, everywhere
    patients = table.frame.groupby("patient")["split"].nunique()
    assert (patients == 1).all()  # split by patientid
    assert (split == "test").sum() >= 0.1 * len(split)
