"""``medsight predict`` as a user runs it: peak memory and wall time of the command, this
checkout side by side with others (``--checkout DIR``, e.g. a ``git worktree`` of an earlier
commit, its ``src`` first on ``PYTHONPATH``), alternating, ``--repeats`` times each.

    .venv/bin/python -m benchmarks.predict_memory --work benchmarks/.work/full [--checkout DIR]

The bundles and image trees are those a ``benchmarks.run`` left in ``--work`` (random weights,
ONNX export; ``bundles/RECIPE`` and ``data/``). Each measurement is one ``python -m medsight
predict BUNDLE TREE --out CSV`` in a child process with a new CSV (the peak PSS of its process
tree, sampled every 0.2 s, and whether it imported PyTorch: ``-X importtime``'s list).
Results: ``results/predict_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import PeakMemory, write_json

HERE = Path(__file__).parent
REPO = HERE.parent
TREES = {"malaria-lenet": "malaria", "pneumonia-cnn": "chest_xray"}


def measure(checkout: Path, bundle: Path, tree: Path, work: Path) -> dict[str, Any]:
    """One ``medsight predict`` of ``checkout``: wall time, peak PSS, torch imported or not."""
    from medsight.allocator import fast_environment

    out, log = work / "predictions.csv", work / "predict.log"
    out.unlink(missing_ok=True)
    env = fast_environment({**os.environ, "PYTHONPATH": str(checkout / "src")})
    command = [sys.executable, "-X", "importtime", "-m", "medsight", "predict", str(bundle)]
    start = time.monotonic()
    with open(log, "w") as sink:
        child = subprocess.Popen([*command, str(tree), "--out", str(out)], stderr=sink, env=env)
        with PeakMemory(interval=0.2, pid=child.pid) as memory:
            returncode = child.wait()
    wall = time.monotonic() - start
    imported = {line.rsplit("|", 1)[-1].strip() for line in log.read_text().splitlines()}
    return {
        "checkout": str(checkout),
        "returncode": returncode,
        "wall_s": round(wall, 2),
        "peak_tree_pss_mb": round(memory.peak_tree_pss_mb, 1),
        "imported_torch": "torch" in imported,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=HERE / ".work" / "full")
    parser.add_argument("--recipes", nargs="+", default=list(TREES), choices=list(TREES))
    parser.add_argument("--checkout", type=Path, nargs="*", default=[])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "predict_memory.json")
    args = parser.parse_args()
    checkouts = [REPO, *[c.resolve() for c in args.checkout]]
    scratch = args.work / "predict_memory"
    scratch.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "command": " ".join(["python -m benchmarks.predict_memory", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "recipes": {},
    }
    for recipe in args.recipes:
        bundle, tree = args.work / "bundles" / recipe, args.work / "data" / TREES[recipe]
        rows = []
        for _ in range(args.repeats):
            for checkout in checkouts:
                rows.append(measure(checkout, bundle, tree, scratch))
                print(json.dumps({"recipe": recipe, **rows[-1]}), flush=True)
        result["recipes"][recipe] = {
            "rows": rows,
            "median": {
                str(checkout): {
                    key: statistics.median(r[key] for r in rows if r["checkout"] == str(checkout))
                    for key in ("wall_s", "peak_tree_pss_mb")
                }
                for checkout in checkouts
            },
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
