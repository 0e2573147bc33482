"""Measuring helpers shared by both sides of the benchmark (standard library only).

The Keras side runs in its own environment (``benchmarks/.venv-keras``) and imports this module
too, so both sides time steps and sample memory with the very same code.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (DataLoader workers, ONNX or TF helper processes)."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        todo += _children(current)
    return pids


def _kib(path: str, field: str) -> int:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class PeakMemory:
    """Peak memory of this process (or of ``pid``) and its children, while the ``with`` block
    runs.

    ``peak_rss_mb``: the kernel's exact high-water mark of this process (VmHWM).
    ``peak_tree_pss_mb``: the largest sum of PSS over the process and its children, sampled
    every ``interval`` seconds. PSS shares pages between the processes that map them, so forked
    DataLoader workers are counted without counting their shared libraries twice: this is the
    fair figure for comparing a multi-process pipeline with a threaded one.
    """

    def __init__(self, interval: float = 0.05, pid: int | None = None):
        self.interval, self.pid = interval, pid
        self.peak_tree_pss_mb = 0.0
        self.peak_rss_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            pss = sum(
                _kib(f"/proc/{p}/smaps_rollup", "Pss") for p in _tree(self.pid or os.getpid())
            )
            self.peak_tree_pss_mb = max(self.peak_tree_pss_mb, pss / 1024)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.pid is None:  # another process's is gone once it has exited
            self.peak_rss_mb = _kib(f"/proc/{os.getpid()}/status", "VmHWM") / 1024

    def figures(self) -> dict[str, float]:
        return {
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "peak_tree_pss_mb": round(self.peak_tree_pss_mb, 1),
        }


def epoch_batch_sizes(images: int, batch: int, steps: int) -> list[int]:
    """Images in each of ``steps`` consecutive steps over epochs of ``images`` images, where
    each epoch ends with a partial batch (Keras' iterators and a DataLoader without
    ``drop_last`` both do)."""
    per_epoch = [min(batch, images - start) for start in range(0, images, batch)]
    return [per_epoch[i % len(per_epoch)] for i in range(steps)]


def steady_throughput(
    start: float, ends: Sequence[float], sizes: Sequence[int], warmup: int, steps: int
) -> float:
    """Images per second over steps ``warmup+1 .. warmup+steps``: ``ends`` are the times each
    step finished (``start``: when the first began), ``sizes`` their images."""
    if len(ends) < warmup + steps or steps < 1:
        raise ValueError(f"need {warmup + steps} timed steps, got {len(ends)}")
    begin = ends[warmup - 1] if warmup else start
    return sum(sizes[warmup : warmup + steps]) / (ends[warmup + steps - 1] - begin)


def training_figures(
    prepare_s: float,
    fit_start: float,
    ends: Sequence[float],
    sizes: Sequence[int],
    epoch_steps: int,
    epoch_images: int,
    warmup: int,
    steps: int,
) -> dict[str, float]:
    """Steady-state images/s, and the first epoch's images/s counting the time spent reading
    and decoding files before it (``prepare_s``) and the framework's start-up inside fit."""
    first_epoch_s = prepare_s + ends[epoch_steps - 1] - fit_start
    return {
        "train_img_s": round(steady_throughput(fit_start, ends, sizes, warmup, steps), 2),
        "train_first_epoch_img_s": round(epoch_images / first_epoch_s, 2),
        "prepare_s": round(prepare_s, 3),
        "first_epoch_s": round(first_epoch_s, 3),
        "timed_steps": steps,
        "warmup_steps": warmup,
        "epoch_steps": epoch_steps,
        "epoch_images": epoch_images,
    }


def steps_to_run(warmup: int, steps: int, epoch_steps: int) -> int:
    """Warm-up + timed steps, rounded up to whole epochs: the first epoch is needed for its
    own figure, and Keras' generator thread keeps the interpreter from exiting when training
    stops in the middle of an epoch."""
    return -(-(warmup + steps) // epoch_steps) * epoch_steps


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(data, indent=2) + "\n")


def write_results(path: Path, module: str, rows: list[dict[str, Any]], **facts: Any) -> None:
    """A benchmark's results file: the command that made it (``python -m MODULE`` and this
    process's arguments), the date, ``facts`` and the rows."""
    result = {
        "command": " ".join([f"python -m {module}", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **facts,
        "rows": rows,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, result)
    print(f"written {path}")
