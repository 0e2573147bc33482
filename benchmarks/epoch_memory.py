"""Peak memory of each process of a training while its epochs run (and, with ``--whole``, after).

    .venv/bin/python -m benchmarks.epoch_memory [--recipe malaria-lenet] [--checkout DIR ...]
        [--whole]

Runs ``medsight train --recipe R --epochs 2`` on the real data (decoded store cached by a
warm-up run first, so decoding is not measured), samples the PSS of the main process and of
each worker process every 0.2 s, and stops the run once its second epoch has ended (with
``--whole`` it runs to its end, and the tree's peak after the epochs is given apart). With
``--checkout`` the same measurement runs on other checkouts of medsight (their ``src`` first on
the path), alternating with this one, ``--repeats`` times each: the side-by-side comparison of
two commits. Also lists the main process's largest mappings by PSS at the middle of epoch 2.
Results: ``results/epoch_memory.json``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import _kib, _tree, write_results

HERE = Path(__file__).parent
DEFAULT_DATA = Path(
    os.environ.get("MEDSIGHT_TEST_DATA", Path(__file__).parents[2] / "shared/datasets")
)


def _mappings(pid: int, top: int = 12) -> dict[str, int]:
    """PSS (MB) by mapped file (anonymous memory as ``[anon]``) of one process."""
    sizes: collections.Counter[str] = collections.Counter()
    name = "[anon]"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if "-" in head[0]:  # a mapping's header line
            name = os.path.basename(head[5]) if len(head) > 5 else "[anon]"
        elif head[0] == "Pss:":
            sizes[name] += int(head[1])
    return {k: v // 1024 for k, v in sizes.most_common(top)}


def measure(
    checkout: Path, recipe: str, data: Path, work: Path, whole: bool = False
) -> dict[str, Any]:
    from medsight.allocator import fast_environment

    run = work / "run"
    shutil.rmtree(run, ignore_errors=True)
    env = fast_environment({**os.environ, "MEDSIGHT_CACHE": str(work / "cache")})
    env |= {"HF_HUB_OFFLINE": "1", "MEDSIGHT_PROGRESS": "json"}
    env["PYTHONPATH"] = str(checkout / "src")
    command = [sys.executable, "-m", "medsight", "train", "--recipe", recipe, "--data", str(data)]
    command += ["--out", str(run), "--epochs", "2"]
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    peaks: dict[str, float] = {}
    tree_peak, mappings, epoch_two, outputs_peak, outputs_start = 0.0, {}, None, 0.0, None
    history = run / "history.csv"
    while child.poll() is None:
        rows = len(history.read_text().splitlines()) if history.exists() else 0
        if rows >= 3 and not whole:  # header and two epochs
            break
        if rows >= 3 and outputs_start is None:
            outputs_start = time.monotonic()
        if rows == 2 and epoch_two is None:
            epoch_two = time.monotonic()
        if epoch_two and not mappings and time.monotonic() - epoch_two > 5:
            mappings = _mappings(child.pid)
        pids, total = _tree(child.pid), 0.0
        for n, pid in enumerate(pids):
            pss = _kib(f"/proc/{pid}/smaps_rollup", "Pss") / 1024
            total += pss
            key = "main" if pid == child.pid else f"worker {n}"
            peaks[key] = max(peaks.get(key, 0.0), pss)
        if outputs_start is None:
            tree_peak = max(tree_peak, total)
        else:
            outputs_peak = max(outputs_peak, total)
        time.sleep(0.2)
    child.kill()
    child.wait()
    after = {}
    if whole:  # what the run does after its epochs: calibration, the domain guard, evaluation
        after = {
            "outputs_peak_tree_pss_mb": round(outputs_peak),
            "outputs_s": round(time.monotonic() - outputs_start, 1) if outputs_start else None,
            "returncode": child.returncode,
        }
    return {
        "checkout": str(checkout),
        "peak_tree_pss_mb": round(tree_peak),
        **after,
        "peak_pss_mb_by_process": {k: round(v) for k, v in peaks.items()},
        "processes": len(peaks),
        "main_mappings_mb": mappings,
        "history": history.read_text() if history.exists() else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--recipe", default="malaria-lenet")
    parser.add_argument("--checkout", type=Path, nargs="*", default=[])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--whole", action="store_true", help="let the run end; the peak after its epochs apart"
    )
    parser.add_argument("--work", type=Path, default=HERE / ".work" / "epoch_memory")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "epoch_memory.json")
    args = parser.parse_args()
    data = args.data / {"malaria-lenet": "malaria", "pneumonia-cnn": "chest_xray/train"}.get(
        args.recipe, ""
    )
    checkouts = [HERE.parent, *[c.resolve() for c in args.checkout]]
    measure(HERE.parent, args.recipe, data, args.work)  # warm-up: decodes into the cache
    rows = []
    for _ in range(args.repeats):
        for checkout in checkouts:
            rows.append(measure(checkout, args.recipe, data, args.work, args.whole))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "history"}), flush=True)
    write_results(args.out, "benchmarks.epoch_memory", rows, recipe=args.recipe)


if __name__ == "__main__":
    main()
