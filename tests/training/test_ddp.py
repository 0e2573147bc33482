"""Two-process DDP (gloo) on the CPU trains one model and writes one run directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd


def test_two_process_ddp_writes_one_bundle(malaria_subset: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    env = {**os.environ, "MEDSIGHT_PROGRESS": "json"}
    command = [
        sys.executable,
        "-m",
        "medsight",
        "train",
        "--recipe",
        "malaria-lenet",
        "--data",
        str(malaria_subset),
        "--out",
        str(out),
        "--epochs",
        "2",
        "--devices",
        "2",
        "data.limit=200",
        "data.image_size=[48, 48]",
        "train.num_workers=0",
        "train.batch_size=16",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert list(pd.read_csv(out / "history.csv")["epoch"]) == [1, 2]  # one writer, not two
    assert sorted(p.name for p in (out / "bundle").iterdir()) == [
        "bundle.json",
        "model.safetensors",
        "model_card.md",
    ]
    assert done.stdout.count("run written to") == 1
