"""The first epoch of a new data set trains while its images are decoded, and ends exactly as a
run that decoded everything first (or found it cached) would have; a file found unreadable in
that epoch restarts the fit without it."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from medsight import api
from medsight.config import load_recipe
from medsight.data import dataset as dataset_module
from medsight.training.run import Run

QUICK = [
    "preprocess.mean=[0.5]",
    "preprocess.std=[0.25]",
    "data.image_size=[48, 48]",
    "train.optimizer=adam",
    "train.lr=0.002",
    "train.batch_size=16",
]


def _train(data: Path, out: Path, *extra: str) -> dict:
    api.train("malaria-lenet", data, out, epochs=2, seed=3, overrides=[*QUICK, *extra])
    return json.loads((out / "metrics.json").read_text())


def _same_training(first: Path, second: Path) -> None:
    a = load_file(first / "bundle" / "model.safetensors")
    b = load_file(second / "bundle" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for name in ("history.csv", "splits.csv", "skipped.csv"):
        columns = ["seconds"] if name == "history.csv" else []
        frames = [pd.read_csv(run / name).drop(columns=columns) for run in (first, second)]
        pd.testing.assert_frame_equal(*frames)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MEDSIGHT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_the_first_batch_trains_before_decoding_ends(
    malaria_subset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files past the first 40 decoded are held back: the first batch (16 of the images
    decoded first) is served anyway."""
    real, calls, release = dataset_module.load_image, [], threading.Event()

    def load(path, *args, **kwargs):
        calls.append(path)
        if len(calls) > 40:
            assert release.wait(60)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(dataset_module, "load_image", load)
    recipe = load_recipe("malaria-lenet", [*QUICK, "train.num_workers=0"])
    run = Run.create(recipe, tmp_path / "run")
    prepared = run.prepare(malaria_subset)
    try:
        assert prepared.decoding is not None and not prepared.decoding.done
        images, labels = next(iter(run.plan(prepared).train))
        assert images.shape[0] == 16 and not prepared.decoding.done
    finally:
        release.set()
    pixels, failures = prepared.decoding.result()
    assert failures == [] and len(calls) == len(prepared.table)


@pytest.fixture(scope="module")
def clean_runs(malaria_subset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("overlap")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDSIGHT_CACHE", str(root / "cache"))
        runs = {"overlapped": _train(malaria_subset, root / "overlapped", "data.limit=200")}
        runs["cached"] = _train(malaria_subset, root / "cached", "data.limit=200")
    return {"root": root, **runs}


def test_an_overlapped_first_epoch_trains_as_a_cached_store_does(clean_runs: dict) -> None:
    root = clean_runs["root"]
    assert clean_runs["overlapped"]["decoded_during_first_epoch"] is True
    assert clean_runs["cached"]["decoded_during_first_epoch"] is False
    _same_training(root / "overlapped", root / "cached")
    stores = list((root / "cache" / "stores").iterdir())
    assert sorted(p.suffix for p in stores) == [".json", ".u8"]  # one complete store, kept


@pytest.fixture(scope="module")
def broken_data(malaria_subset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The subset plus a truncated cell, named like a patient's: it is trained on at once."""
    data = tmp_path_factory.mktemp("broken") / "data"
    shutil.copytree(malaria_subset, data, symlinks=True)
    cell = sorted((malaria_subset / "Uninfected").iterdir())[0]
    (data / "Uninfected" / "C999P999_truncated.png").write_bytes(cell.read_bytes()[:400])
    return data


def test_a_file_found_unreadable_in_the_first_epoch_restarts_the_fit_without_it(
    broken_data: Path, tmp_path: Path, cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    overlapped = _train(broken_data, tmp_path / "overlapped", "train.tracking=csv")
    assert "training starts again without the files" in caplog.text
    assert overlapped["decoded_during_first_epoch"] is False  # the fit that was kept
    shutil.rmtree(cache)
    _train(broken_data, tmp_path / "first", "data.overlap_decoding=false")
    _same_training(tmp_path / "overlapped", tmp_path / "first")
    skipped = pd.read_csv(tmp_path / "overlapped" / "skipped.csv")
    assert skipped["path"].str.endswith("C999P999_truncated.png").tolist() == [True]
    splits = pd.read_csv(tmp_path / "overlapped" / "splits.csv")
    assert not splits["path"].str.contains("truncated").any()
    # the stopped fit left no trace in the tracking: one log, of the fit that was kept
    logs = list((tmp_path / "overlapped" / "csv").iterdir())
    assert [p.name for p in logs] == ["version_0"]
    assert len(pd.read_csv(logs[0] / "metrics.csv")["epoch"].dropna().unique()) == 2
