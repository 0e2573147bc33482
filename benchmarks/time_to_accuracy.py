"""Time to accuracy: the wall time ``medsight train`` needs before its held-out accuracy first
reaches a target, on a first run (empty decoded-image cache).

The run's own checkpoints cannot give every epoch: Lightning 2.6 rewrites ``last.ckpt`` only in
epochs where ``best.ckpt`` improves. So the ``medsight train`` command runs unchanged except for
one addition (``python -m benchmarks.time_to_accuracy train ...``): after each epoch's
validation the weights it scored (the running average with ``train.ema``) are saved with the
wall time since the command was launched. Afterwards each epoch is scored on the run's ``test``
split (patients never used for training or model selection; for Kermany, its 624-image test
split) at the argmax decision, and the first epoch at or above the target gives the time. The
run's own final figure (its bundle, at the threshold chosen on validation) is reported beside it.

fastai, the PyTorch user's alternative (``benchmarks/fastai_side.py``, in
``benchmarks/.venv-fastai``), then trains the same backbone from the same ImageNet weights at
the same input size on the same run's ``splits.csv`` (its training and validation patients; the
same number of passes over the data) and is scored on the same test rows. :func:`versus_fastai`
gives the verdict: medsight reaches the target sooner, and its held-out accuracies (best epoch,
last epoch; argmax, the same rows) are no worse.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from medsight.bundle import Bundle, read_bundle
from medsight.data.dataset import decode_images
from medsight.models.zoo import create_model
from medsight.training.module import HistoryAndProgress

TARGETS = {  # recipe -> (data set folder, held-out accuracy to reach, what it is compared with)
    "malaria": ("malaria", 0.95, "95 % on held-out patients (Rajaraman et al. 2018: ~95.7 %)"),
    "pneumonia": ("chest_xray", 0.928, "Kermany et al. 2018: 92.8 % on the 624 test images"),
}
START_ENV, SNAPSHOTS_ENV = "MEDSIGHT_BENCH_START", "MEDSIGHT_BENCH_SNAPSHOTS"


class EpochSnapshots(HistoryAndProgress):
    """medsight's history callback, plus the weights and wall time after every epoch.

    The snapshot is taken at the end of validation, while the weights validation scored are in
    place: with ``train.ema`` those are the running average, which Lightning's
    ``EMAWeightAveraging`` swaps in for validation and back out in its own
    ``on_validation_epoch_end``, called after this one (callbacks run in list order, and the
    history callback comes first in :func:`medsight.training.fit.fit`)."""

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        super().on_validation_epoch_end(trainer, pl_module)
        if trainer.is_global_zero and not trainer.sanity_checking:
            epoch = trainer.current_epoch + 1
            snapshot = {
                "epoch": epoch,
                "elapsed_s": time.time() - float(os.environ[START_ENV]),
                "state_dict": pl_module.model.state_dict(),
            }
            torch.save(snapshot, Path(os.environ[SNAPSHOTS_ENV]) / f"epoch-{epoch:03d}.pt")


def train_with_snapshots(argv: list[str], snapshots: Path, env: dict[str, str], log: Path) -> float:
    """Run ``medsight ARGV`` (a ``train``) with :class:`EpochSnapshots`; returns its wall time."""
    shutil.rmtree(snapshots, ignore_errors=True)
    snapshots.mkdir(parents=True)
    command = [sys.executable, "-m", "benchmarks.time_to_accuracy", *argv]
    env = {**env, START_ENV: str(time.time()), SNAPSHOTS_ENV: str(snapshots)}
    start = time.monotonic()
    with open(log, "w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}); see {log}")
    return time.monotonic() - start


def held_out_accuracies(run: Path, snapshots: Path) -> list[dict[str, Any]]:
    """Accuracy of each epoch's weights on the run's test split, with the elapsed time."""
    spec, _, _ = read_bundle(run / "bundle")
    frame = pd.read_csv(run / "splits.csv", dtype=str, keep_default_na=False)
    test = frame[frame["split"] == "test"]
    pixels, failures = decode_images(list(test["path"]), spec.image_size, spec.channels)
    if failures:
        raise RuntimeError(f"{len(failures)} test images unreadable, e.g. {failures[0]}")
    labels = test["label"].map(spec.class_names.index).to_numpy()
    model = create_model(
        spec.model_name, len(spec.class_names), spec.channels, spec.image_size, **spec.model_kwargs
    )
    rows = []
    for path in sorted(snapshots.glob("epoch-*.pt")):
        snapshot = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(snapshot["state_dict"])
        logits = Bundle(model, spec).logits(pixels)
        rows.append(
            {
                "epoch": snapshot["epoch"],
                "elapsed_s": round(snapshot["elapsed_s"], 3),
                "accuracy": round(float(np.mean(logits.argmax(1) == labels)), 4),
            }
        )
    return rows


def first_reaching(epochs: list[dict[str, Any]], target: float) -> dict[str, Any] | None:
    """The first epoch whose accuracy is at least ``target`` (None if none is)."""
    return next((row for row in epochs if row["accuracy"] >= target), None)


def time_to_accuracy(
    recipe: str, data_root: Path, work: Path, env: dict[str, str], overrides: list[str]
) -> dict[str, Any]:
    folder, target, reference = TARGETS[recipe]
    run, cache = work / f"tta-{recipe}", work / f"tta-{recipe}-cache"
    for old in (run, cache):
        shutil.rmtree(old, ignore_errors=True)
    argv = ["train", "--recipe", recipe, "--data", str(data_root / folder), "--out", str(run)]
    argv += overrides
    snapshots = work / f"tta-{recipe}-epochs"
    env = {**env, "MEDSIGHT_CACHE": str(cache)}
    total = train_with_snapshots(argv, snapshots, env, work / f"tta-{recipe}.log")
    epochs = held_out_accuracies(run, snapshots)
    reached = first_reaching(epochs, target)
    final = json.loads((run / "metrics.json").read_text())
    return {
        "target_accuracy": target,
        "reference": reference,
        "command": " ".join(["medsight", *argv]),
        "held_out_images": int(final["n"]),
        "run": str(run),
        "epochs": epochs,
        "reached": reached is not None,
        "time_to_target_s": reached["elapsed_s"] if reached else None,
        "epoch_reached": reached["epoch"] if reached else None,
        "best_epoch_accuracy": max(row["accuracy"] for row in epochs),
        "last_epoch_accuracy": epochs[-1]["accuracy"],
        "final_bundle_accuracy": round(float(final["accuracy"]), 4),
        "total_wall_s": round(total, 1),
    }


def fastai_arguments(run: Path, target: float, work: Path) -> list[str]:
    """``benchmarks.fastai_side``'s arguments for the same task as the medsight ``run``: its
    splits, image size, batch size and number of passes over the data (``fine_tune``'s frozen
    epoch plus ``epochs - 1`` unfrozen ones; fastai's own default ``freeze_epochs=1``)."""
    config = yaml.safe_load((run / "config.yaml").read_text())
    height, width = config["data"]["image_size"]
    if height != width:
        raise ValueError(f"{run}: fastai's Resize(size) here is square, not {height}x{width}")
    epochs = int(config["train"]["epochs"])
    return [
        "--splits",
        str(run / "splits.csv"),
        "--size",
        str(height),
        "--bs",
        str(config["train"]["batch_size"]),
        "--epochs",
        str(max(1, epochs - 1)),
        "--freeze-epochs",
        "1",
        "--target",
        str(target),
        "--work",
        str(work),
    ]


HELD_OUT_FIGURES = ("best_epoch_accuracy", "last_epoch_accuracy")


def versus_fastai(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """The verdict on medsight against fastai, from both sides' time-to-accuracy figures:
    ``faster`` when medsight reached the target and fastai did not, or later; ``no_worse`` when
    each held-out accuracy of medsight's (best and last epoch) is at least fastai's; ``met``
    when both hold."""
    mine, other = ours["time_to_target_s"], theirs["time_to_target_s"]
    faster = mine is not None and (other is None or mine < other)
    deltas = {key: round(ours[key] - theirs[key], 4) for key in HELD_OUT_FIGURES}
    no_worse = all(delta >= 0 for delta in deltas.values())
    if mine is None:
        time = f"medsight did not reach {ours['target_accuracy']:.1%}"
    elif other is None:
        time = f"medsight {mine:.0f} s; fastai did not reach {theirs['target_accuracy']:.1%}"
    else:
        time = f"medsight {mine:.0f} s vs fastai {other:.0f} s ({other / mine:.2f}x)"
    figures = ", ".join(
        f"{key.removesuffix('_accuracy').replace('_', ' ')} {ours[key]:.3f} vs {theirs[key]:.3f}"
        for key in HELD_OUT_FIGURES
    )
    return {
        "met": faster and no_worse,
        "faster": faster,
        "no_worse": no_worse,
        "speedup": round(other / mine, 2) if mine and other else None,
        "accuracy_deltas": deltas,
        "by": f"time to target: {time}; held-out accuracy (medsight vs fastai): {figures}",
    }


if __name__ == "__main__":  # the medsight command, with EpochSnapshots as its history callback
    from medsight import cli
    from medsight.training import fit

    fit.HistoryAndProgress = EpochSnapshots
    sys.exit(cli.main(sys.argv[1:]))
