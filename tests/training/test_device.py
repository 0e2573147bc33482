"""Where a fit runs: ``train.accelerator`` / ``--accelerator`` and the precision each implies.

This machine has no GPU; the GPU branches are checked by telling :mod:`medsight.training.device`
that there is one (the loaders, the on-device augmentation and Lightning's settings are then
what a GPU run gets), and for real on a GPU by ``tests/training/test_gpu.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
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
@pytest.mark.parametrize(
    ("native", "expected", "why"),
    [
        (None, "32-true", "auto: the CPU has no AMX or AVX512_BF16 (bf16 would be emulated)"),
        ("amx", "bf16-mixed", "auto: the CPU computes bf16 natively (amx)"),
        ("avx512_bf16", "bf16-mixed", "auto: the CPU computes bf16 natively (avx512_bf16)"),
    ],
)
def test_auto_on_a_cpu_is_bf16_only_where_the_cpu_has_it(
    monkeypatch: pytest.MonkeyPatch, native: str | None, expected: str, why: str
) -> None:
    monkeypatch.setattr(device, "cpu_bf16", lambda: native)
    found = resolve_device(TrainConfig())
    assert (found.accelerator, found.precision, found.name) == ("cpu", expected, "cpu")
    assert found.facts()["precision_chosen"] == why
    # train.precision overrides the choice either way, and then nothing is said of it
    assert resolve_device(TrainConfig(precision="bf16")).precision == "bf16-mixed"
    forced = resolve_device(TrainConfig(precision="32"))
    assert forced.precision == "32-true" and "precision_chosen" not in forced.facts()


@pytest.mark.parametrize(("override", "expected"), [("32", "32"), ("16", "16"), ("bf16", "bf16")])
def test_precision_given_as_a_number_on_the_command_line_is_accepted(
    override: str, expected: str
) -> None:
    """``train.precision=32`` (as the docs write it) arrives as the number 32."""
    recipe = load_recipe("malaria-lenet", [f"train.precision={override}"])
    assert recipe.train.precision == expected
    with pytest.raises(ConfigError, match="train.precision"):
        load_recipe("malaria-lenet", ["train.precision=8"])


def test_cpu_bf16_matches_the_flags_the_kernel_reports() -> None:
    """What PyTorch's cpuinfo finds agrees with /proc/cpuinfo: a CPU without the avx512_bf16
    and amx flags (this AVX2 machine) gets fp32 by default."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo on this system")
    flags = set()
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    found = device.cpu_bf16()
    if found == "amx":
        assert "amx_tile" in flags
    elif found == "avx512_bf16":
        assert "avx512_bf16" in flags
    else:
        assert found is None and "avx512_bf16" not in flags and "amx_bf16" not in flags


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
    monkeypatch.setattr(device, "cpu_bf16", lambda: None)
    monkeypatch.setattr(device, "cores", lambda: 2)
    found = resolve_device(TrainConfig())
    assert (found.accelerator, found.precision, found.name) == ("gpu", expected, "Pretend GPU")
    assert resolve_device(TrainConfig(precision="32")).precision == "32-true"
    assert resolve_device(TrainConfig(accelerator="cpu")).facts() == {
        "accelerator": "cpu",
        "precision": "32-true",
        "device": "cpu",
        "num_workers": 0,
        "precision_chosen": "auto: the CPU has no AMX or AVX512_BF16 (bf16 would be emulated)",
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


@NO_GPU
@pytest.mark.parametrize(
    ("setting", "cores", "gpu", "expected"),
    [("auto", 2, False, 0), ("auto", 4, False, 0), ("auto", 8, False, 2), ("auto", 2, True, 2)]
    + [(3, 2, False, 3), (0, 16, True, 0)],
)
def test_loader_workers_auto_spares_a_small_cpu(
    monkeypatch: pytest.MonkeyPatch, setting, cores: int, gpu: bool, expected: int
) -> None:
    monkeypatch.setattr(device, "cores", lambda: cores)
    if gpu:
        pretend_gpu(monkeypatch)
    chosen = resolve_device(TrainConfig(num_workers=setting))
    assert chosen.workers == expected and chosen.facts()["num_workers"] == expected


def test_num_workers_from_the_command_line() -> None:
    assert load_recipe("malaria-lenet").train.num_workers == "auto"
    assert load_recipe("malaria-lenet", ["train.num_workers=3"]).train.num_workers == 3
    with pytest.raises(ConfigError, match="num_workers"):
        load_recipe("malaria-lenet", ["train.num_workers=-1"])
    with pytest.raises(ConfigError, match="num_workers"):
        load_recipe("malaria-lenet", ["train.num_workers=many"])


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


def test_bf16_autocast_on_the_cpu_agrees_with_fp32() -> None:
    """The fast path ``auto`` picks on AMX / AVX512_BF16 CPUs (bf16 autocast, fp32 weights)
    against the fp32 reference, on the tutorial LeNet and a batch of real-scale inputs: logits,
    decisions, loss and gradients agree to bf16's precision (8 bits of mantissa)."""
    from medsight.models.zoo import create_model

    torch.manual_seed(0)
    model = create_model("malaria_lenet", 2, 3, (64, 64)).eval()  # no dropout: same function
    x = torch.rand(64, 3, 64, 64) * 2 - 1
    y = torch.randint(0, 2, (64,))

    def step(bf16: bool) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
            loss = torch.nn.functional.cross_entropy(logits, y)
        loss.backward()
        return logits.float(), loss.detach(), [p.grad.clone() for p in model.parameters()]

    logits32, loss32, grads32 = step(False)
    logits16, loss16, grads16 = step(True)
    assert logits16.dtype == torch.float32 and next(model.parameters()).dtype == torch.float32
    scale = logits32.abs().max()
    assert (logits16 - logits32).abs().max() <= 0.03 * scale
    agree = (logits16.argmax(1) == logits32.argmax(1)).float().mean()
    assert agree >= 0.95 and abs(loss16 - loss32) <= 0.01 * loss32
    for g16, g32 in zip(grads16, grads32, strict=True):
        cosine = torch.nn.functional.cosine_similarity(g16.flatten(), g32.flatten(), dim=0)
        assert cosine >= 0.99


@pytest.mark.slow
@NO_GPU
def test_a_bf16_fit_on_the_cpu_learns_like_fp32(malaria_subset: Path, tmp_path: Path) -> None:
    """``train.precision=bf16`` through Lightning's bf16-mixed on the CPU: the same run in fp32
    and in bf16 record their precision and learn alike (per-epoch losses close)."""
    from medsight import api

    quick = ["data.image_size=[64, 64]", "preprocess.mean=[0.5]", "preprocess.std=[0.25]"]
    quick += ["train.optimizer=adam", "train.lr=0.002", "train.batch_size=16"]
    quick += ["train.num_workers=0"]
    runs = {}
    for precision in ("32", "bf16"):
        out = tmp_path / precision
        api.train(
            "malaria-lenet", malaria_subset, out, epochs=2, seed=0,
            overrides=[*quick, f"train.precision={precision}"],
        )  # fmt: skip
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["precision"] == ("bf16-mixed" if precision == "bf16" else "32-true")
        runs[precision] = pd.read_csv(out / "history.csv")
    for column in ("train_loss", "val_loss"):
        np.testing.assert_allclose(runs["bf16"][column], runs["32"][column], atol=0.05)
