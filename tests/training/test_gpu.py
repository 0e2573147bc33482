"""Training on a real CUDA GPU (marker ``cuda``): skipped on machines without one, such as CI.

``benchmarks/gpu_check.sh`` runs these on a GPU machine and writes what it found to
``$OUT/gpu_check.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from medsight import api
from medsight.bundle import load_bundle
from medsight.config import AugmentConfig
from medsight.data.augment import augment_batch, draw

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
QUICK = ["data.image_size=[64, 64]", "train.batch_size=32", "train.num_workers=2"]


def test_augmentation_on_the_gpu_matches_the_cpu() -> None:
    aug = AugmentConfig(rotation=40, zoom=0.2, shift=0.1, hflip=True, contrast=0.3, blur=1.0)
    images = torch.randint(0, 256, (16, 3, 64, 64), dtype=torch.uint8)
    params = draw(aug, range(16), (64, 64))
    on_cpu = augment_batch(images, params, aug)
    on_gpu = augment_batch(images.cuda(), params.cuda(), aug)
    assert on_gpu.is_cuda
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=2e-4, rtol=0)


def test_a_run_trains_on_the_gpu_and_its_bundle_predicts_on_the_cpu(
    malaria_subset: Path, tmp_path: Path
) -> None:
    out = api.train(
        "malaria-lenet",
        malaria_subset,
        tmp_path / "run",
        epochs=4,
        overrides=QUICK,
        accelerator="gpu",
    )
    metrics = json.loads((out / "metrics.json").read_text())
    expected = "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    assert (metrics["accelerator"], metrics["precision"]) == ("gpu", expected)
    assert metrics["device"] == torch.cuda.get_device_name()
    assert metrics["accuracy"] >= 0.7, metrics  # held-out patients; chance is 0.5
    bundle = load_bundle(out / "bundle")
    assert next(bundle.model.parameters()).device.type == "cpu"
    cell = sorted((malaria_subset / "Parasitized").iterdir())[0]
    api.predict(out / "bundle", [cell], tmp_path / "predictions.csv")
    rows = pd.read_csv(tmp_path / "predictions.csv")
    assert len(rows) == 1 and rows["path"].iloc[0].endswith(cell.name)
