"""medsight against fastai on one task, alone: the time-to-accuracy phase of ``benchmarks.run``
without the rest of the full-mode run (``malaria``: about 90 min on 2 AVX2 cores).

    .venv/bin/python -m benchmarks.versus_fastai --task malaria

``medsight train --recipe TASK`` runs first (empty decoded-image cache, weights kept after every
epoch), then fastai (``benchmarks/.venv-fastai``, from ``benchmarks/setup_fastai.sh``) on that
run's patients, exactly as in the full-mode run; both are scored on the run's held-out test
patients. Writes ``results/versus_fastai_TASK.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.common import write_results
from benchmarks.run import (
    FASTAI_PYTHON,
    KERAS_PYTHON,
    REPO,
    SETTINGS,
    Sides,
    compare_with_fastai,
    machine,
)
from benchmarks.time_to_accuracy import TARGETS, time_to_accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TARGETS), default="malaria")
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks" / ".work" / "fastai")
    parser.add_argument("--out", type=Path, help="default: results/versus_fastai_TASK.json")
    parser.add_argument("--fastai-python", type=Path, default=FASTAI_PYTHON)
    parser.add_argument(
        "--quick", action="store_true", help="the quick mode's subset and short lr_find"
    )
    args = parser.parse_args()
    if not args.fastai_python.is_file():
        parser.error(f"{args.fastai_python} not found: run benchmarks/setup_fastai.sh first")
    settings = SETTINGS["quick" if args.quick else "full"]
    overrides = settings["tta"].get(args.task, [])
    sides = Sides(args.work.resolve(), KERAS_PYTHON, settings["timeout_s"], args.fastai_python)
    ours = time_to_accuracy(
        args.task, args.data.resolve(), sides.work, sides.envs["medsight"], overrides
    )
    found = {**ours, "overrides": overrides}
    found |= compare_with_fastai(sides, args.task, ours, settings["fastai"])
    out = args.out or REPO / "benchmarks" / "results" / f"versus_fastai_{args.task}.json"
    allocator = sides.envs["medsight"].get("MEDSIGHT_ALLOCATOR_ACTIVE", "system malloc")
    write_results(
        out,
        "benchmarks.versus_fastai",
        [found],
        machine=machine(),
        allocator=f"medsight: {allocator}; fastai: system malloc",
    )
    print(found.get("versus_fastai", found["fastai"]))


if __name__ == "__main__":
    main()
