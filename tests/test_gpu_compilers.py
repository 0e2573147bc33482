"""Triton (a GPU kernel compiler) is left out of the medsight command on a machine without a
GPU: PyTorch then treats it as not installed, and nothing else changes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from medsight import gpu_compilers

PROBE = """
import sys
from medsight.gpu_compilers import leave_out_triton
left_out = leave_out_triton()
import torch, torchvision, lightning
from torch.utils._triton import has_triton_package
print(left_out, sys.modules.get("triton") is None, has_triton_package())
"""

no_gpu = pytest.mark.skipif(gpu_compilers.has_gpu_device(), reason="this machine has a GPU")


def _probe(**env: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env={**os.environ, **env}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "triton not found" not in done.stderr  # torch's warning is silenced
    return done.stdout.split()


@no_gpu
def test_without_a_gpu_pytorch_sees_no_triton() -> None:
    assert _probe() == ["True", "True", "False"]


@no_gpu
def test_medsight_triton_1_keeps_it() -> None:
    pytest.importorskip("triton")
    assert _probe(MEDSIGHT_TRITON="1") == ["False", "False", "True"]


def test_a_gpu_device_file_keeps_it(tmp_path: Path) -> None:
    device = tmp_path / "nvidiactl"
    assert not gpu_compilers.has_gpu_device((str(device),))
    device.touch()
    assert gpu_compilers.has_gpu_device((str(device),))


def test_the_command_leaves_it_out_but_a_caller_of_main_does_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from medsight import cli

    calls: list[bool] = []
    monkeypatch.setattr(cli, "leave_out_triton", lambda: calls.append(True))
    monkeypatch.setattr(sys, "argv", ["medsight", "recipes", "list"])
    assert cli.main() == 0 and calls == [True]
    assert cli.main(["recipes", "list"]) == 0 and calls == [True]
