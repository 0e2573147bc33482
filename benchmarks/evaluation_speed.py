"""One evaluation's bootstrap (1,000 resamples): seconds per task, on this checkout and others.

    .venv/bin/python -m benchmarks.evaluation_speed [--checkout DIR ...] [--repeats 3]

``evaluate_predictions`` is what ``medsight train`` runs on its validation and test splits and
``medsight evaluate`` on any labelled set: every figure with a 95 % patient-bootstrap CI. It is
timed on seeded synthetic predictions of the sizes of this repo's tasks (a model half-sure of
itself; the figures' cost does not depend on what the images were). One child process per
checkout and repeat, checkouts alternating (``--checkout``: their ``src`` first on the path, e.g.
a ``git worktree`` of an older commit). Each child also returns every figure and interval, and
the run reports the largest difference between checkouts: a faster evaluation must give the same
numbers. Results: ``results/evaluation_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
CHILD = """
import json, sys, time
import numpy as np
from medsight.bundle import BundleSpec
from medsight.data.multilabel import MultiLabelRule
from medsight.evaluation.summary import evaluate_predictions

CASES = {
    # name: (images, patients, classes or labels, multi-label)
    "pneumonia-cnn test (binary)": (624, 400, 2, False),
    "malaria test (binary)": (1600, 40, 2, False),
    "pneumonia NORMAL/BACTERIA/VIRUS test": (624, 400, 3, False),
    "ChestX-ray14-like (14 labels)": (1000, 600, 14, True),
}
rng = np.random.default_rng(0)
out = {}
for name, (n, patients, k, multi) in CASES.items():
    names = [f"c{i}" for i in range(k)]
    if multi:
        truth = (rng.random((n, k)) < 0.2).astype(float)
        truth[rng.random((n, k)) < 0.05] = np.nan
        logits = rng.normal(size=(n, k)) + 1.5 * np.nan_to_num(truth)
        spec = BundleSpec(model_name="m", class_names=names, image_size=(8, 8), channels=1,
                          mean=(0.0,), std=(1.0,), multi_label=MultiLabelRule())
    else:
        truth = rng.integers(0, k, n)
        logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[truth]
        spec = BundleSpec(model_name="m", class_names=names, image_size=(8, 8), channels=1,
                          mean=(0.0,), std=(1.0,), positive_class="c1" if k == 2 else None,
                          threshold=0.5, temperature=1.3)
    groups = [f"p{i}" for i in rng.integers(0, patients, n)]
    start = time.perf_counter()
    metrics = evaluate_predictions(truth, logits, spec, groups=groups, resamples=1000)
    seconds = time.perf_counter() - start
    out[name] = {"seconds": round(seconds, 3), "figures": metrics["figures"]}
print(json.dumps(out))
"""


def run_child(checkout: Path) -> dict[str, Any]:
    """One process evaluating every case on ``checkout``'s medsight."""
    env = {**os.environ, "PYTHONPATH": str(checkout / "src")}
    done = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, cwd=checkout
    )
    if done.returncode != 0:
        raise RuntimeError(f"evaluating on {checkout} failed:\n{done.stderr}")
    return json.loads(done.stdout)


def largest_difference(a: dict[str, Any], b: dict[str, Any]) -> float:
    """The largest gap between two checkouts' figures and interval ends (None must match None)."""
    gap = 0.0
    for case, found in a.items():
        for figure, values in found["figures"].items():
            for key, value in values.items():
                other = b[case]["figures"][figure][key]
                if (value is None) != (other is None):
                    return float("inf")
                if value is not None:
                    gap = max(gap, abs(value - other))
    return gap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", type=Path, nargs="*", default=[])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "evaluation_speed.json")
    args = parser.parse_args()
    from benchmarks.common import write_results

    checkouts = [HERE.parent, *[c.resolve() for c in args.checkout]]
    rows, found = [], {}
    for repeat in range(args.repeats):
        for checkout in checkouts:
            result = run_child(checkout)
            found.setdefault(str(checkout), result)
            for case, values in result.items():
                rows.append(
                    {"checkout": str(checkout), "repeat": repeat, "case": case,
                     "seconds": values["seconds"]}
                )  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
    first = found[str(checkouts[0])]
    gaps = {name: largest_difference(first, other) for name, other in found.items()}
    write_results(args.out, "benchmarks.evaluation_speed", rows, largest_difference=gaps)


if __name__ == "__main__":
    main()
