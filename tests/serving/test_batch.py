"""Batch prediction: complete CSVs, resumable after a kill, shards that partition the files,
bad files reported not fatal, DICOM, and ONNX Runtime when the bundle has an export."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from medsight.bundle import load_bundle, load_predictor
from medsight.cli import main
from medsight.data.io import load_image
from medsight.errors import MedsightError
from medsight.serving import batch
from medsight.serving.batch import find_images, parse_shard, predict_files
from medsight.serving.export import export_onnx


@pytest.fixture
def bundle_dir(xray_bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(xray_bundle, tmp_path / "bundle"))


@pytest.fixture
def folder(chest_xray_dir: Path, tmp_path: Path) -> Path:
    """12 real X-rays in nested folders (no labels needed), one of them as DICOM."""
    root = tmp_path / "images"
    for cls in ("NORMAL", "PNEUMONIA"):
        sources = sorted((chest_xray_dir / "test" / cls).glob("*.jpeg"))[:6]
        for i, source in enumerate(sources):
            target = root / cls.lower() / f"batch{i % 2}" / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)
    xray = sorted(root.rglob("*.jpeg"))[0]
    _write_dicom(root / "scan.dcm", np.asarray(Image.open(xray).convert("L")))
    (root / "notes.txt").write_text("not an image: ignored by the folder scan")
    return root


def _write_dicom(path: Path, pixels: np.ndarray) -> Path:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.set_pixel_data(pixels, "MONOCHROME2", 8, generate_instance_uid=False)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every file batch prediction decodes."""
    seen: list[str] = []

    def counting(path: str, *args: object, **kwargs: object) -> np.ndarray:
        seen.append(path)
        return load_image(path, *args, **kwargs)

    monkeypatch.setattr(batch, "load_image", counting)
    return seen


def test_folder_gives_a_complete_csv_and_a_rerun_does_no_work(
    bundle_dir: Path, folder: Path, tmp_path: Path, decodes: list[str]
) -> None:
    out = tmp_path / "predictions.csv"
    done = predict_files(bundle_dir, [folder], out, batch_size=5)
    assert (done.files, done.predicted, done.already_done, done.skipped) == (13, 13, 0, [])
    assert done.engine == "torch"
    frame = pd.read_csv(out)
    assert list(frame.columns) == [
        "path",
        "probability",
        "prediction",
        "p_NORMAL",
        "p_PNEUMONIA",
        "in_domain",
        "domain_score",
    ]
    # the fixture's bundle predates domain guards: nobody can tell, so the cells stay empty
    assert frame["in_domain"].isna().all() and frame["domain_score"].isna().all()
    assert sorted(frame["path"]) == find_images([folder]) and len(decodes) == 13
    assert frame["path"].str.endswith("scan.dcm").sum() == 1  # the DICOM file is predicted
    np.testing.assert_allclose(frame["probability"], frame["p_PNEUMONIA"])
    np.testing.assert_allclose(frame["p_NORMAL"] + frame["p_PNEUMONIA"], 1, atol=2e-6)
    expected = np.where(frame["p_PNEUMONIA"] >= 0.4, "PNEUMONIA", "NORMAL")  # threshold 0.4
    assert (frame["prediction"] == expected).all()
    bundle = load_bundle(bundle_dir)
    pixels = np.stack([load_image(p, (64, 64), 3) for p in frame["path"]])
    np.testing.assert_allclose(frame["p_PNEUMONIA"], bundle.predict_proba(pixels)[:, 1], atol=1e-6)

    before = out.read_bytes()
    again = predict_files(bundle_dir, [folder], out)
    assert (again.predicted, again.already_done, len(decodes)) == (0, 13, 13)
    assert out.read_bytes() == before


def test_an_interrupted_csv_is_completed(
    bundle_dir: Path, folder: Path, tmp_path: Path, decodes: list[str]
) -> None:
    out = tmp_path / "predictions.csv"
    predict_files(bundle_dir, [folder], out)
    complete = pd.read_csv(out).set_index("path").sort_index()
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:4]) + lines[4][:25])  # header, 3 rows and a cut-off row
    decodes.clear()
    resumed = predict_files(bundle_dir, [folder], out)
    assert (resumed.already_done, resumed.predicted, len(decodes)) == (3, 10, 10)
    finished = pd.read_csv(out).set_index("path").sort_index()
    assert finished.index.is_unique
    pd.testing.assert_frame_equal(finished, complete)


def test_shards_cover_every_file_exactly_once(
    bundle_dir: Path, folder: Path, tmp_path: Path
) -> None:
    parts = [
        pd.read_csv(predict_files(bundle_dir, [folder], tmp_path / f"{i}.csv", shard=f"{i}/2").out)
        for i in (0, 1)
    ]
    assert len(parts[0]) and len(parts[1])
    together = pd.concat(parts)["path"]
    assert together.is_unique and sorted(together) == find_images([folder])
    again = pd.read_csv(predict_files(bundle_dir, [folder], tmp_path / "x.csv", shard=(0, 2)).out)
    assert sorted(again["path"]) == sorted(parts[0]["path"])  # deterministic


@pytest.mark.parametrize("shard", ["2/2", "1", "a/b", "-1/2", "0/0"])
def test_bad_shards_are_refused(shard: str) -> None:
    with pytest.raises(MedsightError, match="--shard must be i/N"):
        parse_shard(shard)


def test_unreadable_files_are_reported_not_fatal(
    bundle_dir: Path, folder: Path, tmp_path: Path, capsys
) -> None:
    (folder / "empty.png").write_bytes(b"")
    (folder / "garbage.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "p.csv"
    code = main(["predict", str(bundle_dir), str(folder), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0 and "13 new, 0 already there, 2 unreadable, of 15 files" in captured.out
    assert f"skipped {folder / 'empty.png'}: empty file (0 bytes)" in captured.err
    assert "garbage.jpg" in captured.err and len(pd.read_csv(out)) == 13


def test_onnx_runtime_is_used_when_exported(bundle_dir: Path, folder: Path, tmp_path: Path) -> None:
    with_torch = predict_files(bundle_dir, [folder], tmp_path / "torch.csv")
    export_onnx(bundle_dir)
    with_onnx = predict_files(bundle_dir, [folder], tmp_path / "onnx.csv")
    forced = predict_files(bundle_dir, [folder], tmp_path / "forced.csv", onnx=False)
    assert (with_torch.engine, with_onnx.engine, forced.engine) == ("torch", "onnxruntime", "torch")
    a, b = (pd.read_csv(r.out).set_index("path").sort_index() for r in (with_torch, with_onnx))
    np.testing.assert_allclose(a["p_PNEUMONIA"], b["p_PNEUMONIA"], atol=1e-5)
    assert (a["prediction"] == b["prediction"]).all()


def test_an_exported_bundle_predicts_without_importing_pytorch(
    cell_bundle: Path, malaria_subset: Path, tmp_path: Path
) -> None:
    """The CUDA build of PyTorch costs about 500 MB of memory and seconds of start-up per
    process at import alone; ONNX Runtime needs none of it. The domain guard is in the graph."""
    bundle = Path(shutil.copytree(cell_bundle, tmp_path / "bundle"))
    export_onnx(bundle)
    cells = tmp_path / "cells"
    cells.mkdir()
    for path in sorted(malaria_subset.glob("*/*.png"))[::15]:
        shutil.copy(path, cells / path.name)
    out = tmp_path / "predictions.csv"
    argv = ["predict", str(bundle), str(cells), "--out", str(out)]
    code = (
        "import sys\n"
        "from medsight.cli import main\n"
        f"status = main({argv!r})\n"
        "print(status, sorted(m for m in ('torch', 'lightning', 'timm') if m in sys.modules))\n"
    )
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert child.returncode == 0, child.stderr
    assert child.stdout.splitlines()[-1] == "0 []", child.stderr
    with_torch = predict_files(bundle, [cells], tmp_path / "torch.csv", onnx=False)
    a = pd.read_csv(out).set_index("path").sort_index()
    b = pd.read_csv(with_torch.out).set_index("path").sort_index()
    assert len(a) == len(b) == 40 and a["domain_score"].notna().all()
    for column in ("p_Parasitized", "domain_score"):
        np.testing.assert_allclose(a[column], b[column], rtol=1e-4, atol=1e-5)


def test_inputs_and_csv_mismatch_are_clear_errors(
    bundle_dir: Path, folder: Path, tmp_path: Path, capsys
) -> None:
    other = tmp_path / "other.csv"
    other.write_text("path,label\nx.png,NORMAL\n")
    with pytest.raises(MedsightError, match="exists with columns .*choose another --out"):
        predict_files(bundle_dir, [folder], other)
    binary = tmp_path / "binary.csv"
    binary.write_bytes(bytes(range(256)) * 4 + b"\n")
    with pytest.raises(MedsightError, match="binary.csv: not a predictions CSV"):
        predict_files(bundle_dir, [folder], binary)
    empty = tmp_path / "empty.csv"
    empty.touch()  # e.g. made by a job script: started afresh
    assert predict_files(bundle_dir, [folder], empty).predicted == 13
    with pytest.raises(MedsightError, match="no image files found"):
        predict_files(bundle_dir, [tmp_path / "bundle"], tmp_path / "p.csv")
    args = ["predict", str(bundle_dir), str(folder), "--out", str(tmp_path / "p.csv")]
    assert main([*args, "--shard", "3/2"]) == 2
    assert "error: --shard must be i/N" in capsys.readouterr().err
    assert main([*args, "--shard", "1/2", "--batch-size", "4", "--no-onnx"]) == 0
    assert "(torch)" in capsys.readouterr().out


def test_the_whole_kermany_test_split(bundle_dir: Path, chest_xray_dir: Path, tmp_path: Path):
    export_onnx(bundle_dir, check_images=[chest_xray_dir / "test"])
    out = tmp_path / "all.csv"
    done = predict_files(bundle_dir, [chest_xray_dir / "test"], out)
    assert (done.files, done.predicted, done.engine) == (624, 624, "onnxruntime")
    assert len(pd.read_csv(out)) == 624
    assert predict_files(bundle_dir, [chest_xray_dir / "test"], out).predicted == 0


def test_next_chunk_decodes_while_the_model_runs(
    bundle_dir: Path, folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunk k+1 is being decoded while the model answers chunk k, and never more than one
    chunk waits decoded (memory stays bounded); a sequential loop would time out here."""
    events: list[str] = []
    second_decode = threading.Event()
    decode = batch._decode

    def recording(pool, paths, *args):
        events.append("decode")
        if events.count("decode") == 2:
            second_decode.set()
        return decode(pool, paths, *args)

    model = load_predictor(bundle_dir, prefer_onnx=False)
    answer = model.answer

    def answering(pixels: np.ndarray, batch_size: int):
        if "answer" not in events:
            assert second_decode.wait(timeout=60), "chunk 2 did not decode during chunk 1"
        events.append("answer")
        return answer(pixels, batch_size)

    monkeypatch.setattr(batch, "_decode", recording)
    monkeypatch.setattr(model, "answer", answering)
    done = predict_files(model, [folder], tmp_path / "p.csv", batch_size=3)
    assert done.predicted == 13 and events.count("answer") == 5
    ahead = [events[: i + 1].count("decode") - events[:i].count("answer") for i in range(10)]
    assert max(ahead) <= 2  # the chunk the model holds and at most one decoded ahead


def test_overlapped_csv_equals_the_one_chunk_csv(
    bundle_dir: Path, folder: Path, tmp_path: Path
) -> None:
    """Small chunks (decode overlapped with the model) and a single chunk (nothing to overlap)
    write the same table, in the same order, with the same unreadable file left out."""
    (folder / "normal" / "batch0" / "cut.jpeg").write_bytes(
        next(folder.rglob("*.jpeg")).read_bytes()[:2000]
    )
    one = predict_files(bundle_dir, [folder], tmp_path / "one.csv", batch_size=1000, threads=1)
    small = predict_files(bundle_dir, [folder], tmp_path / "small.csv", batch_size=2)
    assert [p for p, _ in one.skipped] == [p for p, _ in small.skipped]
    assert len(small.skipped) == 1 and "cut.jpeg" in small.skipped[0][0]
    a, b = (pd.read_csv(r.out) for r in (one, small))
    assert (
        list(a["path"]) == list(b["path"]) == [p for p in find_images([folder]) if "cut" not in p]
    )
    pd.testing.assert_frame_equal(a, b, check_exact=False, atol=1e-6)
    assert (a["prediction"] == b["prediction"]).all()
