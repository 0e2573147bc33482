"""Where a fit runs, in which precision and with how many loader processes: the one place
``train.accelerator``, ``train.precision`` and ``train.num_workers`` become Lightning's
``accelerator=`` and ``precision=`` and the DataLoader's ``num_workers=``.

``auto`` takes a CUDA GPU when PyTorch sees one, else the CPU. On a GPU ``auto`` precision is
bf16 mixed precision where the GPU supports it (Ampere and later: no loss scaling needed) and
fp16 mixed with loss scaling before that. On a CPU it is bf16 mixed where the CPU computes in
bf16 natively (AMX or AVX512_BF16: oneDNN's bf16 convolutions ran 1.4-2.7x fp32 on such a CPU)
and full fp32 elsewhere (an AVX2 CPU emulates bf16, many times slower). Asking for a GPU on a
machine without one is an error said before any image is decoded, never a silent fall-back to
hours on the CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from medsight.config import TrainConfig
from medsight.errors import ConfigError

LIGHTNING_PRECISION = {"32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed"}


@dataclass(frozen=True)
class Device:
    """What a fit runs on: Lightning's accelerator (``cpu`` or ``gpu``) and precision, and the
    hardware's name for the run's facts (``metrics.json``)."""

    accelerator: str
    precision: str
    name: str
    why: str = ""  # how the precision was chosen, in words (metrics.json)
    workers: int = 0  # the training DataLoader's worker processes

    @property
    def on_gpu(self) -> bool:
        return self.accelerator == "gpu"

    def facts(self) -> dict[str, str | int]:
        facts = {"accelerator": self.accelerator, "precision": self.precision, "device": self.name}
        facts |= {"num_workers": self.workers}
        return {**facts, "precision_chosen": self.why} if self.why else facts


def gpu_available() -> bool:
    return torch.cuda.is_available()


def cpu_bf16() -> str | None:
    """The CPU's native bf16 instructions (``amx`` or ``avx512_bf16``), None without them.
    PyTorch's own cpuinfo checks (what its compiler uses), absent in older releases."""
    checks = [("amx", "_is_amx_tile_supported"), ("avx512_bf16", "_is_avx512_bf16_supported")]
    for name, check in checks:
        supported = getattr(torch.cpu, check, None)
        if supported is not None and supported():
            return name
    return None


def resolve_device(cfg: TrainConfig) -> Device:
    """The accelerator and precision ``cfg`` asks for on this machine; a ConfigError when it
    asks for what the machine cannot do."""
    if cfg.accelerator == "gpu" and not gpu_available():
        why = (
            f"torch {torch.__version__} is a CUDA {torch.version.cuda} build but finds no GPU "
            "or driver: check nvidia-smi and CUDA_VISIBLE_DEVICES"
            if torch.version.cuda
            else f"torch {torch.__version__} is a CPU-only build: install a CUDA build"
        )
        raise ConfigError(
            f"train.accelerator=gpu (--accelerator gpu) but there is no usable GPU here ({why}); "
            "or train with --accelerator cpu"
        )
    on_gpu = cfg.accelerator == "gpu" or (cfg.accelerator == "auto" and gpu_available())
    precision, why = cfg.precision, ""
    if precision == "auto":
        precision, why = _auto_precision(on_gpu)
    if precision == "16" and not on_gpu:
        raise ConfigError(
            "train.precision=16 (fp16 mixed precision) needs a GPU; on a CPU use 32 or bf16"
        )
    name = torch.cuda.get_device_name() if on_gpu else "cpu"
    workers = loader_workers(cfg.num_workers, on_gpu)
    return Device("gpu" if on_gpu else "cpu", LIGHTNING_PRECISION[precision], name, why, workers)


def cores() -> int:
    """The cores this process may run on (a container's or ``taskset``'s limit included)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def loader_workers(setting: int | str, on_gpu: bool) -> int:
    """``train.num_workers``: a number as given; ``auto`` none on a CPU of up to 4 cores, where
    the model's own threads use every core and the batched augmentation runs on them too (on 2
    cores workers made training slower and took 100-170 MB more), else 2."""
    if setting != "auto":
        return int(setting)
    return 0 if not on_gpu and cores() <= 4 else 2


def _auto_precision(on_gpu: bool) -> tuple[str, str]:
    """``train.precision=auto`` on this machine, and why."""
    if on_gpu:
        if torch.cuda.is_bf16_supported():
            return "bf16", "auto: the GPU supports bf16"
        return "16", "auto: the GPU has no bf16, fp16 with loss scaling"
    native = cpu_bf16()
    if native:
        return "bf16", f"auto: the CPU computes bf16 natively ({native})"
    return "32", "auto: the CPU has no AMX or AVX512_BF16 (bf16 would be emulated)"
