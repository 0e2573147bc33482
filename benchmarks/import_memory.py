"""What importing PyTorch (and the stack above it) costs in memory, per interpreter.

    .venv/bin/python -m benchmarks.import_memory [--python PY ...] [--repeats 3]

For each Python interpreter given (default: this one; e.g. another venv with PyTorch's CPU build),
and for each line of ``STACKS`` it can import, a child process imports the modules, reports its
PSS and its largest mappings by PSS, then exits while its PSS is sampled every 10 ms (PyTorch's
CUDA build touches memory while it shuts down). ``triton left out`` runs the same child as the
``medsight`` command does on a machine with no GPU (``medsight.gpu_compilers``). Children run one
at a time, alternating, with the system allocator and with this checkout's ``src`` on the path.
Results: ``results/import_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import _kib, write_results

HERE = Path(__file__).parent
STACKS = {
    "torch": ["torch"],
    "training stack": ["torch", "torchvision", "lightning", "timm", "medsight.training.fit"],
    "training stack, triton left out": [
        "medsight.gpu_compilers:leave_out_triton",
        "torch",
        "torchvision",
        "lightning",
        "timm",
        "medsight.training.fit",
    ],
}
CHILD = """
import importlib, json, sys
sys.path.insert(0, sys.argv[1])
from benchmarks.epoch_memory import _mappings
from benchmarks.common import _kib
for name in sys.argv[2:]:
    module, _, call = name.partition(":")
    loaded = importlib.import_module(module)
    if call:
        getattr(loaded, call)()
import torch
pss = _kib("/proc/self/smaps_rollup", "Pss") / 1024
print(json.dumps({"pss_mb": round(pss), "torch": torch.__version__,
                  "triton_loaded": sys.modules.get("triton") is not None,
                  "mappings_mb": _mappings(__import__("os").getpid(), 8)}), flush=True)
sys.stdin.read()  # the parent samples the exit after this line
"""


def measure(python: str, modules: list[str]) -> dict[str, Any] | None:
    env = {**os.environ, "PYTHONPATH": str(HERE.parent / "src")}
    child = subprocess.Popen(
        [python, "-c", CHILD, str(HERE.parent), *modules],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    line = child.stdout.readline()
    if not line:  # this interpreter cannot import the stack (e.g. no torchvision)
        child.kill()
        error = child.stderr.read().strip().splitlines()
        child.wait()
        print(f"{python}: {modules}: {error[-1] if error else 'no output'}", file=sys.stderr)
        return None
    result = json.loads(line)
    child.stdin.close()
    exit_peak = result["pss_mb"]
    while child.poll() is None:
        exit_peak = max(exit_peak, _kib(f"/proc/{child.pid}/smaps_rollup", "Pss") / 1024)
        time.sleep(0.01)
    return {**result, "exit_peak_pss_mb": round(exit_peak)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", nargs="*", default=[sys.executable])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "import_memory.json")
    args = parser.parse_args()
    rows = []
    for repeat in range(args.repeats):
        for python in args.python:
            for stack, modules in STACKS.items():
                got = measure(python, modules)
                row = {"python": python, "stack": stack, "repeat": repeat, **(got or {})}
                row["imported"] = got is not None
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "mappings_mb"}), flush=True)
    write_results(args.out, "benchmarks.import_memory", rows)


if __name__ == "__main__":
    main()
