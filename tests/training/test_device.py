"""Where a fit runs: ``train.accelerator`` / ``--accelerator`` and the precision each implies.

This machine has no GPU; the GPU branches are checked by telling :mod:`medsight.training.device`
that there is one (the loaders, the on-device augmentation and Lightning's settings are then
what a GPU run gets), and for real on a GPU by ``tests/training/test_gpu.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medsight.cli import main
from medsight.config import AugmentConfig, TrainConfig, load_recipe
from medsight.data.augment import BatchTransform, augment_on_device
from medsight.data.dataset import ArrayDataset
from medsight.errors import ConfigError
from medsight.training import device
from medsight.training.device import resolve_device
from medsight.training.run import Run

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")


def pretend_gpu(monkeypatch: pytest.MonkeyPatch, bf16: bool = True) -> None:
    monkeypatch.setattr(device, "gpu_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Pretend GPU")


@NO_GPU
def test_auto_trains_on_the_cpu_in_fp32_without_a_gpu() -> None:
    found = resolve_device(TrainConfig())
    assert (found.accelerator, found.precision, found.name) == ("cpu", "32-true", "cpu")
    assert resolve_device(TrainConfig(precision="bf16")).precision == "bf16-mixed"


@NO_GPU
def test_asking_for_a_gpu_without_one_is_an_error_that_says_what_to_do() -> None:
    with pytest.raises(ConfigError, match="no usable GPU.*--accelerator cpu"):
        resolve_device(TrainConfig(accelerator="gpu"))
    with pytest.raises(ConfigError, match="precision=16.*needs a GPU"):
        resolve_device(TrainConfig(precision="16"))


@pytest.mark.parametrize(("bf16", "expected"), [(True, "bf16-mixed"), (False, "16-mixed")])
def test_auto_takes_the_gpu_with_the_mixed_precision_it_supports(
    monkeypatch: pytest.MonkeyPatch, bf16: bool, expected: str
) -> None:
    pretend_gpu(monkeypatch, bf16)
    found = resolve_device(TrainConfig())
    assert (found.accelerator, found.precision, found.name) == ("gpu", expected, "Pretend GPU")
    assert resolve_device(TrainConfig(precision="32")).precision == "32-true"
    assert resolve_device(TrainConfig(accelerator="cpu")).facts() == {
        "accelerator": "cpu",
        "precision": "32-true",
        "device": "cpu",
    }


@NO_GPU
def test_cli_refuses_gpu_before_touching_data_or_out(
    malaria_subset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = ["train", "--recipe", "malaria-lenet", "--data", str(malaria_subset), "--out", str(out)]
    assert main([*argv, "--accelerator", "gpu"]) == 2
    err = capsys.readouterr().err
    assert "no usable GPU" in err and "Traceback" not in err
    assert not out.exists()  # refused before the run folder, let alone decoding
    assert main(["train", "--resume", str(out), "--accelerator", "cpu"]) == 2
    assert "cannot resume" in capsys.readouterr().err


def test_device_augmentation_equals_the_loader_augmentation() -> None:
    aug = AugmentConfig(rotation=30, zoom=0.1, hflip=True, brightness=0.2, contrast=0.2, blur=1)
    pixels = torch.randint(0, 256, (5, 40, 48, 3), dtype=torch.uint8).numpy()
    items = ArrayDataset(pixels, np.arange(5) % 2, seed=3).__getitems__(list(range(5, 10)))
    on_cpu = BatchTransform(aug)(items)
    drawn = BatchTransform(aug, on_device=True)(items)
    assert drawn[0].dtype == torch.uint8 and len(drawn) == 3  # the loader copies uint8 only
    on_device = augment_on_device(drawn, aug)
    torch.testing.assert_close(on_device[0], on_cpu[0])
    assert torch.equal(on_device[1], on_cpu[1])
    validation = BatchTransform()(items)
    assert augment_on_device(validation, aug) is validation


def test_a_gpu_plan_pins_memory_and_augments_after_the_transfer(
    malaria_subset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = load_recipe("malaria-lenet", ["data.limit=60", "train.num_workers=0"])
    run = Run(recipe, tmp_path / "run")
    data = run.prepare(malaria_subset)
    cpu_plan = run.plan(data)
    pretend_gpu(monkeypatch)
    gpu_plan = run.plan(data)
    assert gpu_plan.device.precision == "bf16-mixed" and gpu_plan.train.pin_memory
    assert not cpu_plan.train.pin_memory and cpu_plan.module.device_augment is None
    items = gpu_plan.train.dataset.__getitems__([0, 1, 2, 3])
    transferred = gpu_plan.module.on_after_batch_transfer(gpu_plan.train.collate_fn(items), 0)
    expected = cpu_plan.train.collate_fn(items)
    torch.testing.assert_close(transferred[0], expected[0])
    val_batch = gpu_plan.val.collate_fn(gpu_plan.val.dataset.__getitems__([0, 1]))
    assert gpu_plan.module.on_after_batch_transfer(val_batch, 0)[0].dtype == torch.uint8
