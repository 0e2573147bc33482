"""The memory-scale benchmark's data generator, size folders, cgroup limit and child sampler."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.common import PeakMemory
from benchmarks.memory_scale import MemoryLimit, make_pool, size_tree
from medsight.data.io import content_sha256
from medsight.data.patients import patient_from_filename


@pytest.fixture
def few_cells(malaria_subset: Path, tmp_path: Path) -> Path:
    """Three real cells per class."""
    root = tmp_path / "cells"
    for class_dir in sorted(malaria_subset.iterdir()):
        (root / class_dir.name).mkdir(parents=True)
        for file in sorted(class_dir.glob("*.png"))[:3]:
            (root / class_dir.name / file.name).symlink_to(file.resolve())
    return root


def test_pool_copies_are_unique_close_to_the_cell_and_keep_its_patient(few_cells: Path, tmp_path):
    pool = tmp_path / "pool"
    assert make_pool(few_cells, pool, copies=3, workers=1) == 18
    copies = sorted(pool.glob("*/*.png"))
    assert len(copies) == 18
    assert len({content_sha256(p) for p in copies}) == 18  # nothing to deduplicate
    for copy in copies:
        cell = few_cells / copy.parent.name / (copy.stem.rsplit("_n", 1)[0] + ".png")
        original = np.asarray(Image.open(cell).convert("RGB"), dtype=int)
        noisy = np.asarray(Image.open(copy), dtype=int)
        assert noisy.shape == original.shape
        assert 0 < np.abs(noisy - original).max() <= 2
        assert patient_from_filename(copy) == patient_from_filename(cell) is not None
    assert make_pool(few_cells, pool, copies=4, workers=1) == 6  # only the new copies
    assert not list(pool.glob("*/*.part"))


def test_size_tree_links_the_first_copies(few_cells: Path, tmp_path: Path) -> None:
    pool = tmp_path / "pool"
    make_pool(few_cells, pool, copies=3, workers=1)
    tree = tmp_path / "two"
    assert size_tree(pool, tree, copies=2) == 12
    links = sorted(tree.glob("*/*.png"))
    assert all(p.is_symlink() and p.resolve().parent.parent == pool for p in links)
    assert {p.stem[-3:] for p in links} == {"_n0", "_n1"}
    assert size_tree(pool, tree, copies=1) == 6  # rebuilt, not added to


def test_peak_memory_of_another_process_and_its_children() -> None:
    code = (
        "import time; block = bytearray(200 * 2**20); "
        "block[::4096] = b'x' * len(block[::4096]); time.sleep(1.0)"
    )
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {code!r}])"
    child = subprocess.Popen([sys.executable, "-c", parent])
    with PeakMemory(interval=0.02, pid=child.pid) as memory:
        child.wait()
    assert memory.peak_tree_pss_mb > 180  # the grandchild's 200 MB, sampled from outside
    assert memory.peak_rss_mb == 0  # another process's high-water mark is gone once it exits


def test_memory_limit_holds_a_child_to_its_limit() -> None:
    limit = MemoryLimit.create(f"medsight-test-{os.getpid()}", 200 * 2**20)
    if limit is None:
        pytest.skip("this system does not let a process create a memory cgroup")
    try:
        grab = "block = bytearray(400 * 2**20); block[::4096] = b'x' * len(block[::4096])"
        done = subprocess.run(limit.wrap([sys.executable, "-c", grab]), check=False)
        assert done.returncode != 0  # killed by the limit
        figures = limit.figures()
        assert figures["cgroup_limit_mb"] == 200
        assert figures["oom_kills"] >= 1
        small = subprocess.run(limit.wrap([sys.executable, "-c", "print(1)"]), check=False)
        assert small.returncode == 0
    finally:
        limit.remove()
