"""Keep the GPU kernel compiler (Triton) out of a ``medsight`` process on a machine with no GPU.

PyTorch's default Linux build imports Triton whenever it is installed (``torch._dynamo``, which
torchvision and Lightning import, asks whether it is there): 70 MB of ``libtriton.so`` mapped
into every process, for kernels that only a GPU runs (benchmarks/RESULTS.md, "Triton left out on
a CPU"). ``torch.compile`` on a CPU generates C++ and does not need it. Marking the module as
absent in ``sys.modules`` is Python's own way to make ``import triton`` raise ImportError, which
PyTorch handles as "not installed". Only the ``medsight`` command does this, only where the
machine has no GPU device, and ``MEDSIGHT_TRITON=1`` turns it off.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

# the device files of NVIDIA (CUDA), AMD (ROCm) and WSL GPUs: Triton can only run with one
GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")


def has_gpu_device(files: tuple[str, ...] = GPU_DEVICE_FILES) -> bool:
    """Whether the machine shows a GPU device file (without importing PyTorch, which is what
    would load Triton)."""
    return any(Path(file).exists() for file in files)


def leave_out_triton(environ: Mapping[str, str] = os.environ) -> bool:
    """Make ``import triton`` fail in this process when there is no GPU to run its kernels and
    it is not imported yet; returns whether it did."""
    if environ.get("MEDSIGHT_TRITON") == "1" or "triton" in sys.modules or has_gpu_device():
        return False
    sys.modules["triton"] = None  # type: ignore[assignment]
    # torch.utils.flop_counter warns at import that it cannot count Triton kernels: none run here
    logging.getLogger("torch.utils.flop_counter").setLevel(logging.ERROR)
    return True
