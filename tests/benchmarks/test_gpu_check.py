"""``benchmarks/gpu_check.sh`` as it runs on a machine without a GPU: it still writes its
JSON, says the GPU run failed and why, and exits non-zero (the GPU machine gets the real run)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the no-GPU path")


def test_gpu_check_reports_a_machine_without_a_gpu(malaria_subset: Path, tmp_path: Path) -> None:
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "malaria").symlink_to(malaria_subset)
    out = tmp_path / "out"
    env = {
        **os.environ,
        "OUT": str(out),
        "MEDSIGHT_TEST_DATA": str(tmp_path / "datasets"),
        "RECIPES": "malaria",
    }
    done = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh"], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode != 0
    found = json.loads((out / "gpu_check.json").read_text())
    assert found["torch"]["cuda_available"] is False
    assert found["tests_passed"] is True  # the device tests pass, the cuda ones skip
    malaria = found["recipes"]["malaria"]
    assert malaria["gpu"]["rc"] == 2 and "test_accuracy" not in malaria["gpu"]
    assert "no usable GPU" in (out / "gpu-malaria.log").read_text()
    side = found["side_by_side"]
    assert side["gpu"]["rc"] == 2 and side["cpu"]["rc"] == 0
    assert side["cpu"]["accelerator"] == "cpu" and side["cpu"]["train_images_per_s"] > 0
    assert 0 <= side["cpu"]["test_accuracy"] <= 1 and side["cpu"]["wall_s"] > 0
    assert found["cpu_over_gpu_train_seconds"] is None
