"""``medsight serve`` as a deployment sees it: seconds until ``/healthz`` answers, and the peak
memory (PSS of the server's process tree) while it answers predictions, for this checkout and
others (``--checkout DIR``, their ``src`` first on ``PYTHONPATH``), alternating.

    .venv/bin/python -m benchmarks.serve_memory --work DIR [--recipes malaria-lenet covid-vgg16]
        [--checkout DIR ...] [--repeats 2] [--seconds 10]

``DIR`` is a ``benchmarks.run`` work folder (``bundles/RECIPE`` with an ONNX export, and
``data/``). Each server is driven by :mod:`benchmarks.loadgen` at concurrency 8 on 16 of the
recipe's images; no explanation is asked for. Results: ``results/serve_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import serving
from benchmarks.common import PeakMemory, write_json
from benchmarks.serve_overhead import medsight_server
from benchmarks.workloads import WORKLOADS, image_files, spread

HERE = Path(__file__).parent
REPO = HERE.parent


def serve_once(
    checkout: Path, bundle: Path, images: list[Path], seconds: float, log: Path
) -> dict[str, Any]:
    """Start a server of ``checkout``, time it to healthy, load it, sample its memory."""
    command, base, env = medsight_server(checkout, bundle)
    start = time.monotonic()
    with serving.running(command, f"{base}/healthz", log, env) as process:
        healthy_s = time.monotonic() - start
        with PeakMemory(interval=0.2, pid=process.pid) as memory:
            figures = serving.load(f"{base}/v1/predict", images, 8, seconds)
    return {
        "checkout": str(checkout),
        "startup_s": round(healthy_s, 2),
        "peak_tree_pss_mb": round(memory.peak_tree_pss_mb, 1),
        "throughput_rps": figures["throughput_rps"],
        "errors": figures["errors"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=HERE / ".work" / "full")
    parser.add_argument(
        "--recipes", nargs="+", default=["malaria-lenet", "covid-vgg16"], choices=list(WORKLOADS)
    )
    parser.add_argument("--checkout", type=Path, nargs="*", default=[])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "serve_memory.json")
    args = parser.parse_args()
    checkouts = [REPO, *[c.resolve() for c in args.checkout]]
    result: dict[str, Any] = {
        "command": " ".join(["python -m benchmarks.serve_memory", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "recipes": {},
    }
    for recipe in args.recipes:
        bundle = args.work / "bundles" / recipe
        images = spread(image_files(args.work / "data" / WORKLOADS[recipe].dataset), 16)
        rows = []
        for _ in range(args.repeats):
            for checkout in checkouts:
                rows.append(serve_once(checkout, bundle, images, args.seconds, args.work / "s.log"))
                print(json.dumps({"recipe": recipe, **rows[-1]}), flush=True)
        result["recipes"][recipe] = {
            "rows": rows,
            "median": {
                str(c): {
                    k: statistics.median(r[k] for r in rows if r["checkout"] == str(c))
                    for k in ("startup_s", "peak_tree_pss_mb", "throughput_rps")
                }
                for c in checkouts
            },
        }
    write_json(args.out, result)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
