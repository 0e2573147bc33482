"""benchmarks.predict_memory: the command's peak memory, and whether it imported PyTorch."""

from __future__ import annotations

import shutil
from pathlib import Path

from benchmarks.predict_memory import REPO, measure, medians
from medsight.serving.export import export_onnx


def test_the_command_is_measured_and_its_pytorch_import_seen(
    xray_bundle: Path, chest_xray_dir: Path, tmp_path: Path
) -> None:
    tree = tmp_path / "images"
    tree.mkdir()
    for path in sorted((chest_xray_dir / "test" / "NORMAL").glob("*.jpeg"))[:4]:
        shutil.copy(path, tree / path.name)
    bundle = Path(shutil.copytree(xray_bundle, tmp_path / "bundle"))

    with_torch = measure(REPO, bundle, tree, tmp_path)  # no export yet: PyTorch predicts
    export_onnx(bundle)
    without = measure(REPO, bundle, tree, tmp_path)
    two_per_call = measure(REPO, bundle, tree, tmp_path, batch_size="2")

    assert with_torch["returncode"] == without["returncode"] == 0
    assert with_torch["imported_torch"] is True and without["imported_torch"] is False
    assert 0 < without["peak_tree_pss_mb"] < with_torch["peak_tree_pss_mb"]
    assert (two_per_call["returncode"], two_per_call["batch_size"]) == (0, "2")
    assert without["batch_size"] == "default"
    assert len((tmp_path / "predictions.csv").read_text().splitlines()) == 1 + 4


def row(checkout: str, batch_size: str, wall: float, peak: float) -> dict:
    return {
        "checkout": checkout,
        "batch_size": batch_size,
        "wall_s": wall,
        "peak_tree_pss_mb": peak,
    }


def test_medians_are_per_checkout_and_per_batch_size_when_several() -> None:
    rows = [row("/a", "64", 10, 400), row("/a", "default", 9, 100), row("/a", "64", 12, 420)]
    rows += [row("/a", "default", 11, 110), row("/a", "64", 14, 440), row("/a", "default", 7, 90)]
    found = medians(rows, [(Path("/a"), "64"), (Path("/a"), "default")])
    assert found == {
        "/a --batch-size 64": {"wall_s": 12, "peak_tree_pss_mb": 420},
        "/a --batch-size default": {"wall_s": 9, "peak_tree_pss_mb": 100},
    }
    alone = medians(rows[1::2], [(Path("/a"), "default")])
    assert alone == {"/a": {"wall_s": 9, "peak_tree_pss_mb": 100}}
