"""benchmarks.serve_memory: a real server's start-up time and memory under load."""

from __future__ import annotations

import shutil
from pathlib import Path

from benchmarks.serve_memory import REPO, serve_once
from medsight.serving.export import export_onnx


def test_a_server_is_timed_loaded_and_measured(
    xray_bundle: Path, chest_xray_dir: Path, tmp_path: Path
) -> None:
    bundle = Path(shutil.copytree(xray_bundle, tmp_path / "bundle"))
    export_onnx(bundle)
    images = sorted((chest_xray_dir / "test" / "NORMAL").glob("*.jpeg"))[:4]
    row = serve_once(REPO, bundle, images, 1.0, tmp_path / "server.log")
    assert row["errors"] == 0 and row["throughput_rps"] > 0
    assert row["startup_s"] > 0 and row["peak_tree_pss_mb"] > 50
    assert "GET /healthz" in (tmp_path / "server.log").read_text()
