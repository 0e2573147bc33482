"""The first-epoch benchmark: one run per setting on a tiny real tree, and its summary."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks.epoch_memory import _mappings
from benchmarks.first_epoch import run_once, summarise


def test_both_settings_run_and_train_the_same_weights(malaria_tree: Path, tmp_path: Path) -> None:
    rows = [run_once("malaria-lenet", malaria_tree, tmp_path, overlap) for overlap in (False, True)]
    assert [r["returncode"] for r in rows] == [0, 0], (tmp_path / "train-overlap.log").read_text()
    assert [r["decoded_during_first_epoch"] for r in rows] == [False, True]
    assert 0 < rows[0]["first_epoch_done_s"] < rows[0]["wall_s"]
    assert summarise(rows)["identical_weights"]
    assert not (tmp_path / "cache").exists()  # every run starts from an empty cache


def test_summary_takes_medians_and_flags_other_weights() -> None:
    def row(overlap: bool, first: float, wall: float, weights: str = "a") -> dict:
        return {
            "overlap": overlap,
            "first_epoch_done_s": first,
            "wall_s": wall,
            "weights_sha256": weights,
        }

    rows = [row(False, 50, 150), row(True, 40, 140), row(False, 60, 170), row(True, 44, 150, "b")]
    summary = summarise(rows)
    assert summary["first_epoch_done_s"] == {"decode_first": 55, "overlapped": 42, "speedup": 1.31}
    assert summary["wall_s"]["speedup"] == pytest.approx(160 / 145, abs=1e-3)
    assert summary["identical_weights"] is False


def test_mappings_add_up_to_the_process_memory() -> None:
    from benchmarks.common import _kib

    mappings = _mappings(os.getpid(), top=10_000)
    total = _kib(f"/proc/{os.getpid()}/smaps_rollup", "Pss") / 1024
    assert (
        "[anon]" in mappings and any(name.startswith("libpython") for name in mappings) or mappings
    )
    assert sum(mappings.values()) == pytest.approx(total, abs=len(mappings) + 16)
