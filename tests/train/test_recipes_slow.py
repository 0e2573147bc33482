"""Full recipe runs on the real data (``pytest -m slow``; minutes each)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from medsight import api


@pytest.mark.slow
def test_malaria_lenet_reaches_the_tutorial_figure_on_unseen_patients(
    malaria_dir: Path, tmp_path: Path
) -> None:
    run = api.train("malaria-lenet", malaria_dir, tmp_path / "run")
    splits = pd.read_csv(run / "splits.csv")
    assert (splits.groupby("patient")["split"].nunique() == 1).all()
    metrics = api.evaluate(run / "bundle", run / "splits.csv", tmp_path / "eval", split="test")
    assert metrics["n"] > 500
    assert metrics["accuracy"] >= 0.90  # the tutorial: "above 90 % validation accuracy"
    assert json.loads((run / "metrics.json").read_text())["accuracy"] >= 0.90
