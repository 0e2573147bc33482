"""Patient-grouped k-fold cross-validation: every image held out once, pooled metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from medsight import api
from medsight.errors import ConfigError, DataError

QUICK = ["data.image_size=[32, 32]", "train.num_workers=0", "data.limit=240", "train.batch_size=32"]


def test_three_folds_hold_out_every_image_once(malaria_subset: Path, tmp_path: Path) -> None:
    run = api.train(
        "malaria-lenet", malaria_subset, tmp_path / "cv", epochs=1, seed=3, overrides=QUICK, folds=3
    )
    pooled = json.loads((run / "metrics.json").read_text())
    assert pooled["split"] == "out-of-fold" and pooled["folds"] == 3
    assert run.bundle is None and [f.folder.name for f in run.folds] == [
        "fold-0",
        "fold-1",
        "fold-2",
    ]
    assert run.metrics["n"] == 240 and run.folds[1].bundle == run / "fold-1" / "bundle"
    assert pooled["n"] == 240 and len(pooled["fold_accuracy"]) == 3
    predictions = pd.read_csv(run / "predictions.csv")
    assert predictions["path"].is_unique and len(predictions) == 240
    splits = pd.concat(
        pd.read_csv(run / f"fold-{k}" / "splits.csv").assign(fold=k) for k in range(3)
    )
    held = splits[splits["split"] == "test"]
    assert set(held["path"]) == set(predictions["path"])
    assert (held.groupby("patient")["fold"].nunique() == 1).all()  # a patient in one fold
    for k in range(3):
        fold = splits[splits["fold"] == k]
        test_patients = set(fold.loc[fold["split"] == "test", "patient"])
        assert not test_patients & set(fold.loc[fold["split"] != "test", "patient"])
        assert (run / f"fold-{k}" / "bundle" / "bundle.json").is_file()
    correct = (predictions["label"] == predictions["prediction"]).mean()
    assert pooled["accuracy"] == pytest.approx(correct)


def test_one_fold_is_refused(malaria_subset: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 2 folds"):
        api.train("malaria-lenet", malaria_subset, tmp_path / "cv", folds=1)


@pytest.mark.filterwarnings("ignore:The least populated class")
def test_a_fold_without_a_class_is_refused_before_any_fold_trains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medsight.training import prepare

    monkeypatch.setattr(prepare, "StoreDecode", lambda *a, **k: pytest.fail("decoded"))
    data = tmp_path / "data"
    for name, files in (
        ("Parasitized", [f"C1P{i}_cell.png" for i in range(30)]),
        ("Uninfected", [f"C9P{i % 2}_cell{i}.png" for i in range(6)]),  # two patients
    ):
        (data / name).mkdir(parents=True)
        for file in files:
            (data / name / file).write_text(f"{name} {file}")  # not images: never decoded
    with pytest.raises(DataError, match=r"fold \d of 3 has no 'Uninfected' images.*fewer folds"):
        api.train("malaria-lenet", data, tmp_path / "cv", folds=3)
    assert not (tmp_path / "cv" / "fold-0").exists()
