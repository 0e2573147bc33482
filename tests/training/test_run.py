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
    "train.schedule=cosine",
    "data.limit=400",
    "train.num_workers=2",  # persistent worker processes, killed with the run
]


def _medsight(*args: str, temp: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "MEDSIGHT_PROGRESS": "json"}
    if temp is not None:
        env["TMPDIR"] = str(temp)
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


def _kill_during_epoch(out: Path, epoch: int, args: list[str], temp: Path) -> None:
    """Start (or resume) the run in ``out`` and SIGKILL it in the middle of ``epoch``."""
    victim = _medsight(*args, temp=temp)
    deadline = time.monotonic() + 240
    while _rows(out / "history.csv") < epoch - 1 and victim.poll() is None:
        assert time.monotonic() < deadline, f"training did not finish epoch {epoch - 1}"
        time.sleep(0.05)
    time.sleep(0.3)  # inside the epoch
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (out / "metrics.json").exists()
    assert not list(out.rglob("*.tmp"))  # no half-written file left visible as final


@pytest.mark.parametrize(
    "extra",
    [
        ["train.monitor=val_loss"],
        ["train.monitor=val_accuracy", "train.ema=0.9", "train.mixup=0.4"],
    ],
    ids=["val_loss", "val_accuracy-weight-averaging-and-mixup"],
)
def test_resume_after_two_sigkills_is_bit_identical_to_an_uninterrupted_run(
    malaria_subset: Path, tmp_path: Path, extra: list[str]
) -> None:
    """Two DataLoader workers (persistent), killed in epoch 2 and again in epoch 3."""
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    args = [*ARGS, *extra, "--data", str(malaria_subset)]
    first = _medsight(*args, "--out", str(whole))
    assert first.wait(timeout=300) == 0, first.stdout.read()

    temp = tmp_path / "temp"  # the runs' temporary files
    temp.mkdir()
    _kill_during_epoch(killed, 2, [*args, "--out", str(killed)], temp)
    _kill_during_epoch(killed, 3, ["--resume", str(killed)], temp)
    assert list(temp.glob("medsight-pixels-*"))  # SIGKILL left its scratch folder
    resumed = _medsight("--resume", str(killed), temp=temp)
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read()
    assert not list(temp.glob("medsight-pixels-*"))  # the next run removed it

    a = json.loads((whole / "metrics.json").read_text())
    b = json.loads((killed / "metrics.json").read_text())
    assert b["resumed"] is True
    for key in ("n", "accuracy", "roc_auc", "sensitivity", "specificity", "best_epoch", "val"):
        assert b[key] == a[key], key
    history_a, history_b = pd.read_csv(whole / "history.csv"), pd.read_csv(killed / "history.csv")
    assert list(history_b["epoch"]) == [1, 2, 3]
    measured = [c for c in history_a.columns if c not in ("seconds", "lr_seconds")]
    pd.testing.assert_frame_equal(history_b[measured], history_a[measured], check_exact=True)
    if "train.ema=0.9" in extra:  # the options were in force: an averaged model, blended images
        last = torch.load(killed / "checkpoints" / "last.ckpt", map_location="cpu")
        assert last["averaging_state"]["n_averaged"] == last["global_step"]
        assert history_b["train_accuracy"].isna().all()
    weights_a = load_file(str(whole / "bundle" / "model.safetensors"))
    weights_b = load_file(str(killed / "bundle" / "model.safetensors"))
    assert weights_a.keys() == weights_b.keys()
    for name, tensor in weights_a.items():
        assert torch.equal(weights_b[name], tensor), name


def test_resume_needs_a_checkpoint(tmp_path: Path) -> None:
    from medsight.api import resume
    from medsight.errors import MedsightError

    with pytest.raises(MedsightError, match="config.yaml is missing"):
        resume(tmp_path)


# --- Run: create, reopen, plan, prepare ---------------------------------------------------

SMALL = [
    "data.limit=120",
    "data.image_size=[32,32]",
    "train.epochs=1",
    "train.num_workers=0",
    "train.batch_size=16",
    "preprocess.mean=[0.5]",  # not the identity: the normalisation shows
    "preprocess.std=[0.25]",
]


@pytest.fixture(scope="module")
def small_recipe():
    from medsight.config import load_recipe

    return load_recipe("malaria-lenet", SMALL)


@pytest.fixture(scope="module")
def prepared_run(small_recipe, malaria_subset: Path, tmp_path_factory):
    from medsight.training.run import Run

    run = Run.create(small_recipe, tmp_path_factory.mktemp("prepared") / "run")
    return run, run.prepare(malaria_subset)


def test_create_refuses_a_folder_that_is_not_a_run(small_recipe, tmp_path: Path) -> None:
    from medsight.errors import MedsightError
    from medsight.training.run import Run

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(MedsightError, match=r"is not empty; choose a new --out folder") as caught:
        Run.create(small_recipe, tmp_path)
    assert "--resume" in str(caught.value) and "--overwrite" in str(caught.value)
    with pytest.raises(MedsightError, match="is not empty and is not a medsight run directory"):
        Run.create(small_recipe, tmp_path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # nothing written
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_create_writes_the_resolved_recipe(small_recipe, tmp_path: Path) -> None:
    from medsight.config import load_recipe
    from medsight.training.run import Run

    run = Run.create(small_recipe, tmp_path / "new" / "run")
    assert run.out == tmp_path / "new" / "run" and run.writes
    assert sorted(p.name for p in run.out.iterdir()) == ["config.yaml"]
    assert load_recipe(str(run.out / "config.yaml")) == small_recipe
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (Run.create(small_recipe, empty).out / "config.yaml").is_file()  # empty is fine


def test_create_overwrites_an_earlier_run_only_when_asked(small_recipe, tmp_path: Path) -> None:
    from medsight.errors import MedsightError
    from medsight.training.run import Run

    Run.create(small_recipe, tmp_path)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"an epoch finished")
    with pytest.raises(MedsightError, match="is not empty"):
        Run.create(small_recipe, tmp_path)
    other = small_recipe.model_copy(update={"name": "other"})
    Run.create(other, tmp_path, overwrite=True)
    assert "name: other" in (tmp_path / "config.yaml").read_text()


def test_a_start_that_never_finished_an_epoch_is_replaced(small_recipe, tmp_path: Path) -> None:
    from medsight.errors import MedsightError
    from medsight.training.run import Run

    killed = Run.create(small_recipe, tmp_path / "killed").out  # as kill -9 before epoch 1 left it
    (killed / "splits.csv").write_text("path,split\n")
    (killed / "checkpoints").mkdir()
    assert Run.create(small_recipe, killed).out == killed
    assert sorted(p.name for p in killed.iterdir()) == ["config.yaml"]
    (killed / "notes.txt").write_text("mine")  # not only what a run writes: never replaced
    with pytest.raises(MedsightError, match="is not empty"):
        Run.create(small_recipe, killed)
    assert (killed / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("existed", [False, True])
def test_a_failed_start_leaves_nothing_in_the_way(
    small_recipe, malaria_subset: Path, tmp_path: Path, existed: bool
) -> None:
    from medsight.errors import MedsightError
    from medsight.training.run import Run, train

    out = tmp_path / "run"
    if existed:
        out.mkdir()
    with pytest.raises(MedsightError):
        train(small_recipe, tmp_path / "no-such-folder", out)
    assert out.is_dir() is existed
    assert not existed or not any(out.iterdir())
    run = Run.create(small_recipe, out, data=malaria_subset)  # the corrected command starts
    assert (run.out / "config.yaml").is_file()


def test_overwrite_leaves_nothing_of_the_earlier_run(small_recipe, tmp_path: Path) -> None:
    from medsight.training.run import Run

    Run.create(small_recipe, tmp_path)
    (tmp_path / "metrics.json").write_text("{}")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"the earlier run's weights")
    Run.create(small_recipe, tmp_path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


def test_overwrite_never_deletes_the_runs_own_data(small_recipe, tmp_path: Path) -> None:
    from medsight.errors import MedsightError
    from medsight.training.run import Run

    Run.create(small_recipe, tmp_path)
    (tmp_path / "splits.csv").write_text("path,label\n")  # e.g. --data RUN/splits.csv
    with pytest.raises(MedsightError, match="lies inside .* --overwrite would delete"):
        Run.create(small_recipe, tmp_path, overwrite=True, data=tmp_path / "splits.csv")
    assert (tmp_path / "splits.csv").is_file() and (tmp_path / "config.yaml").is_file()


@pytest.mark.parametrize("missing", ["config.yaml", "run.json", "splits.csv", "last.ckpt"])
def test_reopen_names_the_missing_file(small_recipe, tmp_path: Path, missing: str) -> None:
    from medsight.config import save_recipe
    from medsight.errors import MedsightError
    from medsight.training.run import RESUME_NEEDS, Run

    save_recipe(small_recipe, tmp_path / "config.yaml")
    (tmp_path / "checkpoints").mkdir()
    for needed in RESUME_NEEDS:
        if Path(needed).name != "config.yaml":
            (tmp_path / needed).write_text("x")
    (tmp_path / next(n for n in RESUME_NEEDS if n.endswith(missing))).unlink()
    with pytest.raises(MedsightError) as caught:
        Run.reopen(tmp_path)
    message = str(caught.value)
    assert message.startswith(f"cannot resume {tmp_path}: {missing} is missing")
    assert "finished its first epoch" in message


def test_reopen_takes_the_runs_own_recipe(small_recipe, tmp_path: Path) -> None:
    from medsight.config import save_recipe
    from medsight.training.run import RESUME_NEEDS, Run

    recipe = small_recipe.model_copy(update={"name": "saved"})
    save_recipe(recipe, tmp_path / "config.yaml")
    (tmp_path / "checkpoints").mkdir()
    for needed in RESUME_NEEDS[1:]:
        (tmp_path / needed).write_text("x")
    run = Run.reopen(tmp_path, devices=2)
    assert run.recipe.name == "saved" and run.recipe == recipe
    assert run.out == tmp_path and run.devices == 2
    assert (tmp_path / "checkpoints" / "last.ckpt").read_text() == "x"  # untouched


def test_plan_normalises_batches_exactly_like_the_bundle(prepared_run) -> None:
    from medsight.bundle import InputPipeline

    run, data = prepared_run
    plan = run.plan(data)
    bundle_pipeline = InputPipeline.from_spec(plan.spec)
    assert plan.spec.mean == (0.5,) and plan.spec.std == (0.25,)
    assert plan.spec.image_size == (32, 32) and plan.spec.class_names == data.table.class_names
    images, _ = next(iter(plan.val))
    trained = plan.module.pipeline.normalize(images)
    served = bundle_pipeline(images.permute(0, 2, 3, 1))  # the bundle gets (N, H, W, C)
    assert trained.dtype == torch.float32
    assert torch.equal(trained, served)
    expected = (images.float() / 255 - 0.5) / 0.25
    torch.testing.assert_close(trained, expected)
    assert trained.min() < 0  # really normalised, not just scaled to [0, 1]
    augmented, _ = next(iter(plan.train))  # augmented floats go through the same module
    torch.testing.assert_close(plan.module.pipeline.normalize(augmented), (augmented - 0.5) / 0.25)


def test_plan_loaders_give_augmented_floats_and_plain_uint8(prepared_run) -> None:
    run, data = prepared_run
    plan = run.plan(data)
    split, labels = data.split, data.table.labels
    batch = run.recipe.train.batch_size
    images, targets = next(iter(plan.train))
    assert images.dtype == torch.float32 and images.shape[1:] == (3, 32, 32)
    assert len(images) == batch and targets.dtype == torch.int64
    assert 0 <= images.min() and images.max() <= 1
    grey_levels = images * 255
    assert not torch.allclose(grey_levels, grey_levels.round())  # resampled by the augmentation
    assert sum(len(y) for _, y in plan.train) == (split == "train").sum()

    val_images, val_targets = next(iter(plan.val))
    assert val_images.dtype == torch.uint8 and val_images.shape[1:] == (3, 32, 32)
    val_pixels = data.pixels[split == "val"]
    expected = torch.from_numpy(val_pixels[: len(val_images)]).permute(0, 3, 1, 2)
    assert torch.equal(val_images, expected)  # in order, unaugmented
    assert val_targets.tolist() == labels[split == "val"][: len(val_images)].tolist()
    assert sum(len(y) for _, y in plan.val) == (split == "val").sum()


def test_the_same_run_prepared_twice_gives_identical_splits(
    prepared_run, malaria_subset: Path, small_recipe, tmp_path: Path
) -> None:
    import numpy as np

    from medsight.training.run import Run

    run, first = prepared_run
    splits = (run.out / "splits.csv").read_text()
    again = run.prepare(malaria_subset)
    assert (run.out / "splits.csv").read_text() == splits
    pd.testing.assert_frame_equal(again.table.frame, first.table.frame)
    assert np.array_equal(again.pixels, first.pixels)
    assert set(first.split) == {"train", "val", "test"} and len(first.split) == 120
    elsewhere = Run.create(small_recipe, tmp_path / "elsewhere")
    elsewhere.prepare(malaria_subset)
    assert (elsewhere.out / "splits.csv").read_text() == splits
