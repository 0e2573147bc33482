"""benchmarks.predict_memory: the command's peak memory, and whether it imported PyTorch."""

from __future__ import annotations

import shutil
from pathlib import Path

from benchmarks.predict_memory import REPO, measure
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

    assert with_torch["returncode"] == without["returncode"] == 0
    assert with_torch["imported_torch"] is True and without["imported_torch"] is False
    assert 0 < without["peak_tree_pss_mb"] < with_torch["peak_tree_pss_mb"]
    assert len((tmp_path / "predictions.csv").read_text().splitlines()) == 1 + 4
