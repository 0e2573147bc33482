"""Tutorial (d) curation on the real ieee8023 metadata.csv and Kermany, checked independently."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from medsight.data.curate import Curation, curate_covid, write_manifest
from medsight.data.sources import from_csv
from medsight.errors import DataError

TASKS = [
    ("covid-vs-normal", "kermany", "normal"),
    ("covid-vs-pneumonia", "kermany", "pneumonia"),
    ("covid-vs-pneumonia", "metadata", "pneumonia"),
]


@pytest.fixture(scope="module")
def roots(datasets_dir: Path) -> tuple[Path, Path]:
    covid, kermany = datasets_dir / "covid", datasets_dir / "chest_xray"
    if not (covid / "metadata.csv").is_file() or not (kermany / "train").is_dir():
        pytest.skip("covid/ or chest_xray/ dataset not found")
    return covid, kermany


@pytest.fixture(scope="module")
def curations(roots: tuple[Path, Path]) -> dict[tuple[str, str], Curation]:
    return {
        (task, source): curate_covid(*roots, task=task, other_source=source)  # type: ignore[arg-type]
        for task, source, _ in TASKS
    }


@pytest.fixture(scope="module")
def expected(roots: tuple[Path, Path]) -> pd.DataFrame:
    """The tutorial's filter computed here with plain pandas, apart from medsight's code."""
    covid = roots[0]
    meta = pd.read_csv(covid / "metadata.csv", dtype=str)
    rows = meta[(meta.modality == "X-ray") & (meta.finding == "COVID-19") & (meta.view == "PA")]
    rows = rows.assign(
        path=[str(covid / f / n) for f, n in zip(rows.folder, rows.filename, strict=True)]
    )
    rows["exists"] = [Path(p).is_file() for p in rows.path]
    has_month = rows.date.notna() & ~rows.date.fillna("").str.fullmatch(r"\s*\d{4}\s*")
    parsed = pd.to_datetime(rows.date.where(has_month), format="mixed", errors="coerce")
    rows["month"] = parsed.dt.strftime("%Y-%m")
    return rows


def test_filter_counts_match_pandas(curations: dict, expected: pd.DataFrame) -> None:
    cur = curations[("covid-vs-normal", "kermany")]
    present = expected[expected.exists]
    assert len(expected) == cur.summary["covid_pa_xray_rows"] == 206
    assert len(present) == cur.summary["covid_with_image"] == 205
    assert sorted(p for p, _ in cur.skipped) == sorted(expected.path[~expected.exists])
    assert cur.summary["covid_variants_excluded"] == {"COVID-19, ARDS": 11}
    assert cur.summary["finding"]["COVID-19"] == 526 and cur.summary["modality"]["X-ray"] == 667
    covid = cur.manifest[cur.manifest.label == "COVID-19"]
    assert sorted(covid.path) == sorted(present.path)
    assert (covid.source == "ieee8023").all()


def test_skipped_rows_have_no_file_and_are_not_used(curations: dict, roots: tuple) -> None:
    cur = curations[("covid-vs-normal", "kermany")]
    missing = str(roots[0] / "images" / "covid-19-pneumonia-14-PA.png")
    assert [p for p, _ in cur.skipped] == [missing]
    assert "missing" in cur.skipped[0][1]
    assert cur.table.skipped == cur.skipped
    assert missing not in set(cur.manifest.path)
    assert all(Path(p).is_file() for p in cur.manifest.path)


def test_latest_month_is_the_max_dated_month(curations: dict, expected: pd.DataFrame) -> None:
    present = expected[expected.exists]
    latest = present.month.dropna().max()
    for cur in curations.values():
        assert cur.summary["latest_month"] == latest == "2020-03"  # the tutorial's March 2020
        held = cur.manifest[(cur.manifest.label == "COVID-19") & (cur.manifest.split == "test")]
        assert sorted(held.path) == sorted(present.path[present.month == latest])
        assert len(held) == 8


@pytest.mark.parametrize(("task", "source", "other"), TASKS)
def test_holdout_is_latest_month_plus_twenty(
    curations: dict, expected: pd.DataFrame, task: str, source: str, other: str
) -> None:
    cur = curations[(task, source)]
    assert cur.table.class_names == ["COVID-19", other]
    assert set(cur.manifest.split.dropna()) == {"test"}
    held = cur.manifest[cur.manifest.split == "test"]
    assert held.label.value_counts().to_dict() == {"COVID-19": 8, other: 20}
    assert cur.summary["counts"][other] == {"train_pool": _pool(cur, other), "test": 20}
    assert set(held[held.label == other].source) == {source if source == "kermany" else "ieee8023"}


def _pool(cur: Curation, label: str) -> int:
    return int((cur.manifest.split.isna() & (cur.manifest.label == label)).sum())


@pytest.mark.parametrize(("task", "source", "other"), TASKS)
def test_training_pool_is_balanced(curations: dict, task: str, source: str, other: str) -> None:
    cur = curations[(task, source)]
    pool = cur.manifest[cur.manifest.split.isna()]
    counts = pool.label.value_counts().to_dict()
    assert counts["COVID-19"] == counts[other]
    assert counts["COVID-19"] == (197 if source == "kermany" else 40)
    assert len(cur.table.frame) == len(cur.manifest)
    assert not cur.manifest.path.duplicated().any()


def test_file_listed_under_two_patients_is_used_once(curations: dict) -> None:
    """The snapshot lists 000001-27.jpg & co. under patients 285/339 and 287/340: one image."""
    cur = curations[("covid-vs-pneumonia", "metadata")]
    dupes = [(Path(p).name, r) for p, r in cur.skipped if "same file" in r]
    assert sorted(n for n, _ in dupes) == [
        "000001-24.jpg", "000001-27.jpg", "000006-17.jpg", "000007-15.jpg"
    ]  # fmt: skip
    assert not {"covid-339", "covid-340"} & set(cur.manifest.patient)


@pytest.mark.parametrize(("task", "source", "other"), TASKS)
def test_no_patient_in_training_pool_and_holdout(
    curations: dict, task: str, source: str, other: str
) -> None:
    frame = curations[(task, source)].table.frame
    assert frame.patient.notna().all()
    pool = set(frame.patient[frame.split.isna()])
    held = set(frame.patient[frame.split == "test"])
    assert not pool & held
    covid = frame[frame.label == "COVID-19"]
    assert covid.patient.str.startswith("covid-").all()


def test_same_seed_same_manifest_other_seed_other_normals(roots: tuple, curations: dict) -> None:
    first = curations[("covid-vs-normal", "kermany")]
    again = curate_covid(*roots, seed=42)
    pd.testing.assert_frame_equal(first.manifest, again.manifest)
    other = curate_covid(*roots, seed=7)

    def paths(cur: Curation, label: str) -> set[str]:
        return set(cur.manifest.path[cur.manifest.label == label])

    assert paths(first, "normal") != paths(other, "normal")
    assert paths(first, "COVID-19") == paths(other, "COVID-19")  # positives do not use the seed
    how = "reservoir sample seed 7 from Kermany train/NORMAL"
    assert set(other.manifest.reason[other.manifest.label == "normal"]) == {
        how,
        f"held out, {how}, patients not in the training pool",
    }


def test_manifest_round_trips_through_from_csv(curations: dict, tmp_path: Path) -> None:
    cur = curations[("covid-vs-normal", "kermany")]
    path = write_manifest(cur, tmp_path / "run" / "manifest.csv")
    table = from_csv(path)
    assert table.class_names == ["COVID-19", "normal"]
    assert len(table) == len(cur.manifest) == 197 * 2 + 8 + 20
    assert (table.frame.split == "test").sum() == 28


def test_missing_column_or_file_is_a_data_error(roots: tuple, tmp_path: Path) -> None:
    meta = pd.read_csv(roots[0] / "metadata.csv", dtype=str)
    meta.drop(columns="view").to_csv(tmp_path / "metadata.csv", index=False)
    with pytest.raises(DataError, match=r"metadata\.csv: missing column\(s\) view"):
        curate_covid(tmp_path, roots[1])
    with pytest.raises(DataError, match="metadata.csv not found"):
        curate_covid(tmp_path / "nowhere", roots[1])


def test_dates_and_patients_across_the_holdout(roots: tuple, tmp_path: Path) -> None:
    """A bare year is not a month; a held-out patient's earlier image leaves the training pool."""
    rows = [("1", "Jan 5, 2021", "a.png"), ("1", "Feb 2, 2021", "b.png"), ("2", "2021", "c.png"),
            ("3", "01/30/21", "d.png"), ("4", "", "e.png")]  # fmt: skip
    (tmp_path / "images").mkdir()
    for _, _, name in rows:
        (tmp_path / "images" / name).write_bytes(b"")
    pd.DataFrame(
        [(p, "COVID-19", "PA", "X-ray", d, "images", f) for p, d, f in rows],
        columns=["patientid", "finding", "view", "modality", "date", "folder", "filename"],
    ).to_csv(tmp_path / "metadata.csv", index=False)
    cur = curate_covid(tmp_path, roots[1], holdout_per_class=2)
    assert cur.summary["latest_month"] == "2021-02"
    by_name = {Path(p).name: s for p, s in zip(cur.manifest.path, cur.manifest.split, strict=True)}
    assert by_name["b.png"] == "test" and "a.png" not in by_name
    assert [Path(p).name for p, _ in cur.skipped] == ["a.png"]
    assert cur.summary["counts"]["normal"] == {"train_pool": 3, "test": 2}
