"""benchmarks.import_memory and benchmarks.guard_batches: real child processes, measured."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from benchmarks.guard_batches import cells, fit_once
from benchmarks.import_memory import STACKS, measure
from medsight.gpu_compilers import has_gpu_device


def test_an_import_is_measured_up_to_its_exit() -> None:
    row = measure(sys.executable, ["torch"])
    assert row is not None and row["pss_mb"] > 50
    assert row["exit_peak_pss_mb"] >= row["pss_mb"] and row["torch"]


def test_a_stack_an_interpreter_cannot_import_is_reported_as_such() -> None:
    assert measure(sys.executable, ["torch", "no_such_module_here"]) is None


def test_the_medsight_stack_without_triton_loads_no_triton() -> None:
    row = measure(sys.executable, STACKS["training stack, triton left out"])
    assert row is not None
    assert row["triton_loaded"] is has_gpu_device()


def test_the_guard_is_fitted_on_real_cells_and_measured(datasets_dir: Path, tmp_path: Path) -> None:
    pixels, labels = cells(datasets_dir, 40, tmp_path)
    assert np.load(pixels).shape == (40, 128, 128, 3) and set(np.load(labels)) == {0, 1}
    row = fit_once(pixels, labels, 8)
    assert row["seconds"] > 0 and row["images"] == 40
    assert row["peak_pss_mb"] >= row["before_mb"] > 50
