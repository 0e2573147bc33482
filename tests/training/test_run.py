"""A run killed with SIGKILL in the middle of an epoch resumes and ends as if never killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

ARGS = [
    "--recipe",
    "malaria-lenet",
    "--epochs",
    "3",
    "--seed",
    "5",
    "preprocess.mean=[0.5]",
    "preprocess.std=[0.25]",
    "data.image_size=[96, 96]",
    "train.optimizer=adam",
    "train.lr=0.002",
    "train.batch_size=16",
    "train.num_workers=0",
    "train.schedule=cosine",
    "data.limit=400",
]


def _medsight(*args: str) -> subprocess.Popen:
    env = {**os.environ, "MEDSIGHT_PROGRESS": "json"}
    return subprocess.Popen(
        [sys.executable, "-m", "medsight", "train", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _rows(history: Path) -> int:
    try:
        return len(pd.read_csv(history))
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return 0


@pytest.mark.parametrize(
    "extra",
    [[], ["train.ema=0.9", "train.mixup=0.4"]],
    ids=["plain", "weight-averaging-and-mixup"],
)
def test_resume_after_sigkill_matches_uninterrupted_run(
    malaria_subset: Path, tmp_path: Path, extra: list[str]
) -> None:
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    args = [*ARGS, *extra]
    first = _medsight(*args, "--data", str(malaria_subset), "--out", str(whole))
    assert first.wait(timeout=300) == 0, first.stdout.read()

    victim = _medsight(*args, "--data", str(malaria_subset), "--out", str(killed))
    deadline = time.monotonic() + 240
    while _rows(killed / "history.csv") < 1 and victim.poll() is None:
        assert time.monotonic() < deadline, "training did not finish epoch 1"
        time.sleep(0.05)
    time.sleep(0.3)  # inside epoch 2
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed / "metrics.json").exists()
    assert not list(killed.rglob("*.tmp"))  # no half-written file left visible as final

    resumed = _medsight("--resume", str(killed))
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read()

    a = json.loads((whole / "metrics.json").read_text())
    b = json.loads((killed / "metrics.json").read_text())
    assert b["resumed"] is True and b["n"] == a["n"]
    for key in ("accuracy", "roc_auc", "sensitivity", "specificity"):
        assert b[key] == pytest.approx(a[key], abs=1e-6), key
    history_a, history_b = pd.read_csv(whole / "history.csv"), pd.read_csv(killed / "history.csv")
    assert list(history_b["epoch"]) == [1, 2, 3]
    for column in ("train_loss", "val_loss", "val_accuracy"):
        assert history_b[column].to_numpy() == pytest.approx(
            history_a[column].to_numpy(), abs=1e-4
        ), column
    if extra:  # the options were in force: an averaged model, blended images
        last = torch.load(killed / "checkpoints" / "last.ckpt", map_location="cpu")
        assert last["averaging_state"]["n_averaged"] == last["global_step"]
        assert history_b["train_accuracy"].isna().all()
    weights_a = load_file(str(whole / "bundle" / "model.safetensors"))
    weights_b = load_file(str(killed / "bundle" / "model.safetensors"))
    for name, tensor in weights_a.items():
        assert (weights_b[name] - tensor).abs().max() < 1e-4, name


def test_resume_needs_a_checkpoint(tmp_path: Path) -> None:
    from medsight.api import resume
    from medsight.errors import MedsightError

    with pytest.raises(MedsightError, match="config.yaml is missing"):
        resume(tmp_path)
