"""DataLoader worker processes against none, side by side: a recipe's training through
medsight's own code path (:func:`benchmarks.medsight_side.measure_train`: an empty decoded-image
cache, the first epoch decoding as it trains, then timed steps), one child process per setting,
settings alternating, ``--repeats`` rounds.

    .venv/bin/python -m benchmarks.loader_workers --recipe malaria-lenet [--workers 0 2]

Why: on a 2-core CPU the model's threads already use every core, so worker processes compete
with it for the cores and each holds its own copy of the process. ``train.num_workers=auto``
follows what this measures. Results: ``results/loader_workers.json`` (``--out``).
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

from benchmarks.common import write_json
from benchmarks.workloads import build_tree

HERE = Path(__file__).parent
DEFAULT_DATA = Path(
    os.environ.get("MEDSIGHT_TEST_DATA", Path(__file__).parents[2] / "shared/datasets")
)
TREES = {"malaria-lenet": ("malaria", 8000), "pneumonia-cnn": ("chest_xray", 4700)}
FIGURES = ("train_img_s", "train_first_epoch_img_s", "first_epoch_s", "peak_tree_pss_mb")


def measure(recipe: str, tree: Path, workers: int, work: Path, steps: int) -> dict[str, Any]:
    """One training of ``recipe`` with ``workers`` DataLoader workers, in a child process."""
    from medsight.allocator import fast_environment

    out = work / f"workers-{workers}.json"
    command = [sys.executable, "-m", "benchmarks.medsight_side", "train", "--recipe", recipe]
    command += ["--data", str(tree), "--work", str(work / "train"), "--out", str(out)]
    command += ["--warmup", "5", "--steps", str(steps), "--set", f"train.num_workers={workers}"]
    env = fast_environment({**os.environ, "HF_HUB_OFFLINE": "1"})
    subprocess.run(command, check=True, env=env, cwd=HERE.parent, stderr=subprocess.DEVNULL)
    found = json.loads(out.read_text())
    return {"workers": workers, **{key: found[key] for key in FIGURES}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--recipe", default="malaria-lenet", choices=list(TREES))
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--work", type=Path, default=HERE / ".work" / "loader_workers")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "loader_workers.json")
    args = parser.parse_args()
    kind, images = TREES[args.recipe]
    tree = build_tree(kind, args.data, args.work / "data" / kind, images)
    rows = []
    for _ in range(args.repeats):
        for workers in args.workers:
            rows.append(measure(args.recipe, tree, workers, args.work, args.steps))
            print(json.dumps(rows[-1]), flush=True)
    medians = {
        str(w): {k: statistics.median(r[k] for r in rows if r["workers"] == w) for k in FIGURES}
        for w in args.workers
    }
    result = {
        "command": " ".join(["python -m benchmarks.loader_workers", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cores": len(os.sched_getaffinity(0)),
        "recipe": args.recipe,
        "rows": rows,
        "median": medians,
    }
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    previous[f"{args.recipe}, {args.steps} steps"] = result
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, previous)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
