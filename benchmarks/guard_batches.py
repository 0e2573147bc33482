"""The domain guard's fitting (as a training ends) at several images per call: time and memory.

    .venv/bin/python -m benchmarks.guard_batches [--batches 48 12] [--images 3200] [--repeats 3]

``fit_guard`` (EfficientNet-Lite0 features of the training images, the Mahalanobis fit, the
validation split's distances) on real NIH cells at 128 px, as ``medsight train --recipe
malaria-lenet`` runs it, with ``medsight.bundle.domain.PIXELS_PER_CALL`` set so that a call takes
each number of images given. One child process per setting (fast allocator as the ``medsight``
command sets it, Triton left out as it does), settings alternating, ``--repeats`` rounds; the
child's PSS is sampled every 50 ms (``PeakMemory``). Results: ``results/guard_batches.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import write_results

HERE = Path(__file__).parent
DEFAULT_DATA = Path(
    os.environ.get("MEDSIGHT_TEST_DATA", Path(__file__).parents[2] / "shared/datasets")
)
SIZE = 128
CHILD = """
import json, sys, time
import numpy as np
from medsight.gpu_compilers import leave_out_triton
leave_out_triton()
import medsight.bundle.domain as domain
from benchmarks.common import PeakMemory, _kib
pixels = np.load(sys.argv[1])
labels = np.load(sys.argv[2])
domain.PIXELS_PER_CALL = int(sys.argv[3]) * pixels.shape[1] * pixels.shape[2]
val = len(pixels) // 10
base = _kib("/proc/self/smaps_rollup", "Pss") / 1024
with PeakMemory() as memory:
    start = time.perf_counter()
    domain.fit_guard(pixels[val:], labels[val:], pixels[:val])
    seconds = time.perf_counter() - start
print(json.dumps({"seconds": round(seconds, 2), "before_mb": round(base),
                  "peak_pss_mb": round(memory.peak_tree_pss_mb), "images": len(pixels)}))
"""


def cells(data: Path, count: int, work: Path) -> tuple[Path, Path]:
    """``count`` real cells spread over both classes, decoded once at 128 px."""
    from medsight.data.io import load_image

    pixels_file, labels_file = work / f"cells-{count}.npy", work / f"labels-{count}.npy"
    if not pixels_file.exists():
        files = [(f, k) for k, c in enumerate(("Parasitized", "Uninfected"))
                 for f in sorted((data / "malaria" / c).glob("*.png"))]  # fmt: skip
        picked = [files[i] for i in np.linspace(0, len(files) - 1, count).astype(int)]
        work.mkdir(parents=True, exist_ok=True)
        np.save(labels_file, np.array([k for _, k in picked]))
        np.save(pixels_file, np.stack([load_image(f, (SIZE, SIZE), 3) for f, _ in picked]))
    return pixels_file, labels_file


def fit_once(pixels: Path, labels: Path, batch: int) -> dict[str, Any]:
    """One child process fitting the guard at ``batch`` images per call: seconds and PSS."""
    from medsight.allocator import fast_environment

    env = fast_environment({**os.environ, "HF_HUB_OFFLINE": "1"})
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent / "src"), str(HERE.parent)])
    command = [sys.executable, "-c", CHILD, str(pixels), str(labels), str(batch)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"fitting the guard at {batch} per call failed:\n{done.stderr}")
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--batches", type=int, nargs="+", default=[48, 12])
    parser.add_argument("--images", type=int, default=3200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=HERE / ".work" / "guard_batches")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "guard_batches.json")
    args = parser.parse_args()
    pixels, labels = cells(args.data, args.images, args.work)
    rows = []
    for repeat in range(args.repeats):
        for batch in args.batches:
            rows.append({"batch": batch, "repeat": repeat, **fit_once(pixels, labels, batch)})
            print(json.dumps(rows[-1]), flush=True)
    write_results(args.out, "benchmarks.guard_batches", rows)


if __name__ == "__main__":
    main()
