"""``medsight predict`` as a user runs it: peak memory and wall time of the command, this
checkout side by side with others (``--checkout DIR``, e.g. a ``git worktree`` of an earlier
commit, its ``src`` first on ``PYTHONPATH``) and with ``--batch-size`` settings (``default``:
none given), alternating, ``--repeats`` times each.

    .venv/bin/python -m benchmarks.predict_memory --work benchmarks/.work/full [--checkout DIR]
        [--recipes covid-vgg16 ...] [--batch-sizes default 64]

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
from benchmarks.workloads import WORKLOADS

HERE = Path(__file__).parent
REPO = HERE.parent
DEFAULT = "default"  # no --batch-size: the command's own choice


def measure(
    checkout: Path, bundle: Path, tree: Path, work: Path, batch_size: str = DEFAULT
) -> dict[str, Any]:
    """One ``medsight predict`` of ``checkout``: wall time, peak PSS, torch imported or not."""
    from medsight.allocator import fast_environment

    out, log = work / "predictions.csv", work / "predict.log"
    out.unlink(missing_ok=True)
    env = fast_environment({**os.environ, "PYTHONPATH": str(checkout / "src")})
    command = [sys.executable, "-X", "importtime", "-m", "medsight", "predict", str(bundle)]
    if batch_size != DEFAULT:
        command += ["--batch-size", batch_size]
    start = time.monotonic()
    with open(log, "w") as sink:
        child = subprocess.Popen([*command, str(tree), "--out", str(out)], stderr=sink, env=env)
        with PeakMemory(interval=0.2, pid=child.pid) as memory:
            returncode = child.wait()
    wall = time.monotonic() - start
    imported = {line.rsplit("|", 1)[-1].strip() for line in log.read_text().splitlines()}
    return {
        "checkout": str(checkout),
        "batch_size": batch_size,
        "returncode": returncode,
        "wall_s": round(wall, 2),
        "peak_tree_pss_mb": round(memory.peak_tree_pss_mb, 1),
        "imported_torch": "torch" in imported,
    }


def medians(rows: list[dict[str, Any]], settings: list[tuple[Path, str]]) -> dict[str, Any]:
    """Median wall time and peak per checkout (and batch size, when more than one is measured)."""
    several = len({b for _, b in settings}) > 1
    found = {}
    for checkout, batch_size in settings:
        mine = [r for r in rows if (r["checkout"], r["batch_size"]) == (str(checkout), batch_size)]
        key = f"{checkout} --batch-size {batch_size}" if several else str(checkout)
        found[key] = {
            k: statistics.median(r[k] for r in mine) for k in ("wall_s", "peak_tree_pss_mb")
        }
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=HERE / ".work" / "full")
    parser.add_argument(
        "--recipes", nargs="+", default=["malaria-lenet", "pneumonia-cnn"], choices=list(WORKLOADS)
    )
    parser.add_argument("--checkout", type=Path, nargs="*", default=[])
    parser.add_argument("--batch-sizes", nargs="+", default=[DEFAULT])
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
    settings = [(c, b) for c in checkouts for b in args.batch_sizes]
    for recipe in args.recipes:
        bundle = args.work / "bundles" / recipe
        tree = args.work / "data" / WORKLOADS[recipe].dataset
        rows = []
        for _ in range(args.repeats):
            for checkout, batch_size in settings:
                rows.append(measure(checkout, bundle, tree, scratch, batch_size))
                print(json.dumps({"recipe": recipe, **rows[-1]}), flush=True)
        result["recipes"][recipe] = {"rows": rows, "median": medians(rows, settings)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
