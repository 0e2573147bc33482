"""Step timing arithmetic and the peak-memory sampler shared by both benchmark sides."""

from __future__ import annotations

import subprocess
import sys

import pytest

from benchmarks.common import (
    PeakMemory,
    epoch_batch_sizes,
    steady_throughput,
    steps_to_run,
    training_figures,
)


@pytest.mark.parametrize(
    ("images", "batch", "steps", "expected"),
    [
        (10, 4, 5, [4, 4, 2, 4, 4]),  # a partial batch ends every epoch
        (8, 4, 3, [4, 4, 4]),
        (3, 5, 2, [3, 3]),
    ],
)
def test_epoch_batch_sizes(images: int, batch: int, steps: int, expected: list[int]) -> None:
    assert epoch_batch_sizes(images, batch, steps) == expected


@pytest.mark.parametrize(
    ("warmup", "steps", "epoch_steps", "expected"),
    [(2, 6, 4, 8), (2, 7, 4, 12), (1, 1, 10, 10), (10, 150, 250, 250)],
)
def test_steps_to_run_is_whole_epochs(warmup: int, steps: int, epoch_steps: int, expected: int):
    assert steps_to_run(warmup, steps, epoch_steps) == expected


def test_steady_throughput_counts_only_the_timed_steps() -> None:
    ends = [1.0, 2.0, 2.5, 3.0, 3.5]
    sizes = [32, 32, 32, 32, 10]
    # warm-up 2: steps 3 and 4 (64 images) between t=2.0 and t=3.0
    assert steady_throughput(0.0, ends, sizes, warmup=2, steps=2) == pytest.approx(64.0)
    # no warm-up: from the start of the first step
    assert steady_throughput(0.0, ends, sizes, warmup=0, steps=1) == pytest.approx(32.0)
    with pytest.raises(ValueError, match="need 6 timed steps"):
        steady_throughput(0.0, ends, sizes, warmup=2, steps=4)


def test_training_figures_count_preparation_in_the_first_epoch() -> None:
    figures = training_figures(
        prepare_s=3.0,
        fit_start=10.0,
        ends=[11.0, 12.0, 13.0, 14.0],
        sizes=[50, 50, 50, 50],
        epoch_steps=2,
        epoch_images=100,
        warmup=1,
        steps=3,
    )
    assert figures["first_epoch_s"] == pytest.approx(5.0)  # 3 s preparing + 2 s of steps
    assert figures["train_first_epoch_img_s"] == pytest.approx(20.0)
    assert figures["train_img_s"] == pytest.approx(50.0)


def test_peak_memory_counts_child_processes() -> None:
    child = (
        "import time; block = bytearray(300 * 2**20); "
        "block[::4096] = b'x' * len(block[::4096]); time.sleep(1.5)"
    )
    with PeakMemory(interval=0.02) as alone:
        pass
    with PeakMemory(interval=0.02) as memory:
        subprocess.run([sys.executable, "-c", child], check=True)
    figures = memory.figures()
    assert set(figures) == {"peak_rss_mb", "peak_tree_pss_mb"}
    assert figures["peak_rss_mb"] > 0
    # the child's 300 MB count towards the tree, not towards this process's own RSS
    assert figures["peak_tree_pss_mb"] > alone.peak_tree_pss_mb + 250
