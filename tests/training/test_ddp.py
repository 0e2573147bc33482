"""Two-process DDP (gloo) on the CPU trains one model and writes one run directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest


def _train_ddp(recipe: str, data: Path, out: Path, *overrides: str) -> str:
    """``medsight train --devices 2`` for 2 short epochs; returns its stdout."""
    env = {**os.environ, "MEDSIGHT_PROGRESS": "json"}
    command = [
        *(sys.executable, "-m", "medsight", "train", "--recipe", recipe),
        *("--data", str(data), "--out", str(out), "--epochs", "2", "--devices", "2"),
        *("train.num_workers=0", "train.batch_size=16", *overrides),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert json.loads((out / "metrics.json").read_text())["world_size"] == 2
    assert list(pd.read_csv(out / "history.csv")["epoch"]) == [1, 2]  # one writer, not two
    assert done.stdout.count("run written to") == 1
    return done.stdout


def test_two_process_ddp_writes_one_bundle(malaria_subset: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    _train_ddp("malaria-lenet", malaria_subset, out, "data.limit=200", "data.image_size=[48, 48]")
    assert sorted(p.name for p in (out / "bundle").iterdir()) == [
        "README.md",
        "bundle.json",
        "domain.safetensors",
        "model.safetensors",
        "model_card.md",
        "training_images.json",
    ]


def test_ddp_processes_share_the_lung_model(chest_xray_dir: Path, tmp_path: Path) -> None:
    """The first process trains (here: takes) the lung model; the second reuses its copy."""
    pytest.importorskip("segmentation_models_pytorch", reason="pip install medsight[lungs]")
    import torch

    from medsight.models.lung_spec import LungSpec
    from medsight.models.lungs import LungCrop, build_segmenter, save_lungs

    torch.manual_seed(0)
    given = save_lungs(tmp_path / "given", LungCrop(build_segmenter(LungSpec()), LungSpec()))
    out = tmp_path / "ddp"
    _train_ddp(
        "pneumonia",
        chest_xray_dir,
        out,
        "data.limit=120",
        "data.image_size=[64, 64]",
        "model.pretrained=null",
        "train.freeze_epochs=0",
        f"preprocess.lung_crop.model={given}",
    )
    assert (out / "lungs" / "lungs.safetensors").read_bytes() == (
        given / "lungs.safetensors"
    ).read_bytes()
    assert (out / "bundle" / "lungs.safetensors").is_file()
