"""Explaining image files: one overlay per image at the file's own size, a summary CSV, and
the ``medsight explain`` command."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medsight.bundle import load_bundle
from medsight.cli import main
from medsight.errors import MedsightError
from medsight.explanation import explain_files


def test_explain_files_overlays_have_the_image_size(tmp_path: Path, xray_bundle: Path) -> None:
    rng = np.random.default_rng(0)
    sizes = {"wide.png": (80, 150), "tall.jpg": (200, 90)}
    paths = []
    for name, (h, w) in sizes.items():
        Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)).save(tmp_path / name)
        paths.append(tmp_path / name)
    (tmp_path / "other").mkdir()
    shutil.copy(paths[0], tmp_path / "other" / "wide.png")  # same name, another folder
    (tmp_path / "broken.png").write_bytes(b"not an image")
    bundle = load_bundle(xray_bundle)
    paths += [tmp_path / "other" / "wide.png", tmp_path / "broken.png"]
    with pytest.raises(MedsightError, match="unknown CAM method"):
        explain_files(bundle, paths, tmp_path / "out", method="nope")
    assert not (tmp_path / "out").exists()
    frame, skipped = explain_files(bundle, paths, tmp_path / "out")
    assert [Path(p).name for p, _ in skipped] == ["broken.png"]
    with open(tmp_path / "out" / "explanations.csv") as handle:
        rows = list(csv.DictReader(handle))
    overlays = ["wide_gradcam.png", "tall_gradcam.png", "wide_gradcam-2.png"]
    assert [r["overlay"] for r in rows] == list(frame["overlay"]) == overlays
    for name, (h, w) in zip(overlays, [*sizes.values(), sizes["wide.png"]], strict=True):
        with Image.open(tmp_path / "out" / name) as overlay:
            assert (overlay.size, overlay.mode) == ((w, h), "RGB")
    assert {r["layer"] for r in rows} == {"features"}
    assert all(r["prediction"] in ("NORMAL", "PNEUMONIA") for r in rows)
    assert all(np.isfinite(float(r["faithfulness"])) for r in rows)


def test_cli_explain(tmp_path: Path, xray_bundle: Path, chest_xray_dir: Path, capsys) -> None:
    image = sorted((chest_xray_dir / "test" / "PNEUMONIA").glob("*.jpeg"))[0]
    out = tmp_path / "out"
    code = main(["explain", str(xray_bundle), str(image), "--out", str(out), "--method",
                 "gradcam++", "--target", "NORMAL"])  # fmt: skip
    assert code == 0 and "1 overlays" in capsys.readouterr().out
    with Image.open(out / f"{image.stem}_gradcam++.png") as overlay, Image.open(image) as source:
        assert overlay.size == source.size
    with open(out / "explanations.csv") as handle:
        assert next(csv.DictReader(handle))["target"] == "NORMAL"
    code = main(["explain", str(xray_bundle), str(image), "--out", str(out), "--layer", "nope"])
    assert code == 2 and "error: layer 'nope'" in capsys.readouterr().err


def test_an_out_of_domain_image_is_marked_on_its_overlay(
    cell_bundle: Path, chest_xray_dir: Path, malaria_subset: Path, tmp_path: Path
) -> None:
    from medsight.bundle import load_bundle
    from medsight.explanation.files import explain_files

    xray = sorted((chest_xray_dir / "test" / "NORMAL").glob("*.jpeg"))[0]
    frame, _ = explain_files(load_bundle(cell_bundle), [xray], tmp_path)
    assert frame.loc[0, "in_domain"] == "false" and frame.loc[0, "domain_score"] > 1
    overlay = np.asarray(Image.open(tmp_path / frame.loc[0, "overlay"]).convert("RGB"))
    assert (overlay[2, :, 0] > 150).mean() > 0.5 and (overlay[2, :, 1] < 80).mean() > 0.3
