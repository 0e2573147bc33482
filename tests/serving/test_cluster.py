"""``medsight predict`` on a cluster (docs/commands.md#on-a-cluster): shards merged with the
documented command equal one unsharded run row for row, a shard's rerun touches only its own
files, and a run killed with SIGKILL finishes on a rerun as if it had never been killed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medsight.data.io import load_image
from medsight.serving import batch
from medsight.serving.batch import find_images, in_shard, predict_files

MERGE = "awk 'FNR>1 || NR==1' shard-*.csv > predictions.csv"  # as docs/commands.md says


@pytest.fixture(scope="module")
def archive(chest_xray_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 real X-rays in nested folders, as an archive to predict."""
    root = tmp_path_factory.mktemp("archive")
    for cls in ("NORMAL", "PNEUMONIA"):
        for i, source in enumerate(sorted((chest_xray_dir / "test" / cls).glob("*.jpeg"))[:30]):
            target = root / cls.lower() / f"part{i % 3}" / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)
    return root


@pytest.fixture(scope="module")
def bundle_dir(xray_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(shutil.copytree(xray_bundle, tmp_path_factory.mktemp("b") / "bundle"))


@pytest.fixture(scope="module")
def unsharded(bundle_dir: Path, archive: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("whole") / "predictions.csv"
    predict_files(bundle_dir, [archive], out, batch_size=8, onnx=False)
    return pd.read_csv(out).sort_values("path", ignore_index=True)


def test_merged_shards_equal_one_unsharded_run(
    bundle_dir: Path, archive: Path, unsharded: pd.DataFrame, tmp_path: Path
) -> None:
    for i in range(3):
        predict_files(
            bundle_dir, [archive], tmp_path / f"shard-{i}.csv", shard=f"{i}/3", onnx=False
        )
    subprocess.run(["bash", "-c", MERGE], cwd=tmp_path, check=True)
    merged = pd.read_csv(tmp_path / "predictions.csv")
    assert merged["path"].is_unique and len(merged) == len(unsharded) == 60
    merged = merged.sort_values("path", ignore_index=True)
    pd.testing.assert_frame_equal(merged, unsharded, check_exact=False, rtol=1e-5)


def test_a_shard_rerun_decodes_only_its_own_unfinished_files(
    bundle_dir: Path, archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[str] = []

    def counting(path: str, *args: object, **kwargs: object) -> np.ndarray:
        decoded.append(path)
        return load_image(path, *args, **kwargs)

    monkeypatch.setattr(batch, "load_image", counting)
    out = tmp_path / "shard-1.csv"
    first = predict_files(bundle_dir, [archive], out, shard="1/3", onnx=False)
    mine = {f for f in find_images([archive]) if in_shard(f, 1, 3)}
    assert set(decoded) == mine and first.predicted == len(mine) < 60
    decoded.clear()
    again = predict_files(bundle_dir, [archive], out, shard="1/3", onnx=False)
    assert (again.predicted, again.already_done, decoded) == (0, len(mine), [])


def test_a_sigkilled_run_finishes_on_a_rerun_as_if_never_killed(
    bundle_dir: Path, archive: Path, unsharded: pd.DataFrame, tmp_path: Path
) -> None:
    out = tmp_path / "predictions.csv"
    argv = [sys.executable, "-m", "medsight", "predict", str(bundle_dir), str(archive)]
    argv += ["--out", str(out), "--batch-size", "1", "--no-onnx"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if out.is_file() and out.read_bytes().count(b"\n") >= 6:  # header and 5 rows
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    rows_before = out.read_bytes().count(b"\n") - 1
    assert 5 <= rows_before < 60
    resumed = predict_files(bundle_dir, [archive], out, batch_size=8, onnx=False)
    assert resumed.already_done >= 5 and resumed.predicted == 60 - resumed.already_done
    finished = pd.read_csv(out)
    assert finished["path"].is_unique
    finished = finished.sort_values("path", ignore_index=True)
    pd.testing.assert_frame_equal(finished, unsharded, check_exact=False, rtol=1e-5)
