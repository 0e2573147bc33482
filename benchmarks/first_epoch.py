"""The first epoch of a new data set: decoding overlapped with training, against decoding first.

    .venv/bin/python -m benchmarks.first_epoch [--recipes malaria-lenet pneumonia-cnn] [--repeats 2]

Each run is ``medsight train --recipe R --epochs 1`` in a child process with an empty cache
(nothing decoded before), once with ``data.overlap_decoding=true`` (the default: the images are
decoded in the order the first epoch reads them while it trains) and once with ``false`` (every
image decoded first), alternating, ``--repeats`` times each. Measured from the parent: the time
from the start of the command to the end of the first epoch (``history.csv`` appears) and the
whole run's wall time; the trained weights of the two settings must be identical (same seed,
same data, same draws). Results: ``results/first_epoch.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import write_json

HERE = Path(__file__).parent
DEFAULT_DATA = Path(
    os.environ.get("MEDSIGHT_TEST_DATA", Path(__file__).parents[2] / "shared/datasets")
)
DATA_OF = {"malaria-lenet": "malaria", "pneumonia-cnn": "chest_xray"}


def run_once(recipe: str, data: Path, work: Path, overlap: bool) -> dict[str, Any]:
    """One training with an empty cache; seconds to the end of epoch 1 and to the end."""
    from medsight.allocator import fast_environment

    run, cache = work / "run", work / "cache"
    for folder in (run, cache):
        shutil.rmtree(folder, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    env = fast_environment({**os.environ, "MEDSIGHT_CACHE": str(cache), "HF_HUB_OFFLINE": "1"})
    env["MEDSIGHT_PROGRESS"] = "json"
    command = [str(Path(sys.executable).with_name("medsight")), "train", "--recipe", recipe]
    command += ["--data", str(data), "--out", str(run), "--epochs", "1"]
    command += [f"data.overlap_decoding={str(overlap).lower()}"]
    start = time.monotonic()
    first_epoch = None
    with open(work / f"train-{'overlap' if overlap else 'first'}.log", "w") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        while child.poll() is None:
            if first_epoch is None and (run / "history.csv").exists():
                first_epoch = time.monotonic() - start
            time.sleep(0.05)
    figures: dict[str, Any] = {"overlap": overlap, "returncode": child.returncode}
    if child.returncode == 0:
        metrics = json.loads((run / "metrics.json").read_text())
        figures |= {
            "first_epoch_done_s": round(first_epoch or float("nan"), 1),
            "wall_s": round(time.monotonic() - start, 1),
            "decoded_during_first_epoch": metrics.get("decoded_during_first_epoch"),
            "accuracy": metrics.get("accuracy"),
            "weights_sha256": _sha256(run / "bundle" / "model.safetensors"),
        }
    shutil.rmtree(cache, ignore_errors=True)
    return figures


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Median seconds per setting and the ratio decode-first / overlapped (> 1: overlap wins)."""
    import statistics

    def median(overlap: bool, key: str) -> float:
        return statistics.median(r[key] for r in rows if r["overlap"] is overlap)

    summary = {}
    for key in ("first_epoch_done_s", "wall_s"):
        first, overlapped = median(False, key), median(True, key)
        summary[key] = {
            "decode_first": round(first, 1),
            "overlapped": round(overlapped, 1),
            "speedup": round(first / overlapped, 3),
        }
    summary["identical_weights"] = len({r["weights_sha256"] for r in rows}) == 1
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--recipes", nargs="+", default=list(DATA_OF))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--work", type=Path, default=HERE / ".work" / "first_epoch")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "first_epoch.json")
    args = parser.parse_args()
    result: dict[str, Any] = {
        "command": " ".join(["python -m benchmarks.first_epoch", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpus": os.cpu_count(),
        "recipes": {},
    }
    for recipe in args.recipes:
        data = args.data / DATA_OF[recipe]
        if recipe == "pneumonia-cnn":
            data = data / "train"
        rows = []
        for _ in range(args.repeats):
            for overlap in (False, True):
                rows.append(run_once(recipe, data, args.work / recipe, overlap))
                print(recipe, json.dumps(rows[-1]), flush=True)
        failed = [r for r in rows if r["returncode"] != 0]
        result["recipes"][recipe] = {
            "rows": rows,
            **({"failed": len(failed)} if failed else summarise(rows)),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    for recipe, figures in result["recipes"].items():
        print(recipe, json.dumps({k: v for k, v in figures.items() if k != "rows"}))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
