"""What ``medsight serve`` adds around the model: the same bundle served by this checkout and by
others (``--checkout DIR``, their ``src`` first on ``PYTHONPATH``, e.g. a ``git worktree`` of an
earlier commit), one server at a time and alternating, each driven by :mod:`benchmarks.loadgen`
from a second process at concurrency 1 and 8.

    .venv/bin/python -m benchmarks.serve_overhead [--checkout DIR ...] [--repeats 2]

The bundle is ``malaria-lenet`` with random weights and its ONNX export (the small model whose
serving is bound by everything but the model). Per server and level: throughput, p50/p99, and
the server's own mean model time per call (``/v1/stats``; older checkouts without it: None).
Appends nothing anywhere: the JSON goes to stdout and ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

from benchmarks import serving
from benchmarks.medsight_side import make_bundle as write_bundle
from benchmarks.run import environments
from benchmarks.workloads import build_tree, image_files, spread

REPO = Path(__file__).resolve().parents[1]
LEVELS = [1, 8]


def make_bundle(data: Path, work: Path) -> tuple[Path, list[Path]]:
    """A random-weight ``malaria-lenet`` bundle with its ONNX export, and 16 cell images."""
    tree = build_tree("malaria", data, work / "data", 64)
    bundle = work / "bundle"
    if not (bundle / "model.onnx").is_file():
        write_bundle("malaria-lenet", tree, bundle)
    return bundle, spread(image_files(tree), 16)


def medsight_server(checkout: Path, bundle: Path) -> tuple[list[str], str, dict[str, str]]:
    """The command, base URL and environment of ``medsight serve BUNDLE`` of ``checkout`` (its
    ``src`` first on ``PYTHONPATH``) on a free port."""
    env = {**environments()["medsight"], "PYTHONPATH": str(checkout / "src")}
    port = serving.free_port()
    command = [sys.executable, "-m", "medsight", "serve", str(bundle), "--port", str(port)]
    return command, f"http://127.0.0.1:{port}", env


def serve_once(
    checkout: Path, bundle: Path, images: list[Path], seconds: float, log: Path
) -> dict[str, Any]:
    """One server of ``checkout`` under load at each level, with its own statistics."""
    command, base, env = medsight_server(checkout, bundle)
    return serving.measure(
        command, f"{base}/healthz", f"{base}/v1/predict", images, LEVELS, seconds, log, env,
        stats_url=f"{base}/v1/stats",
    )  # fmt: skip


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the repeats of each level's throughput, p50, p99 and model time."""
    out = {}
    for level in map(str, LEVELS):
        rows = [run[level] for run in runs]
        model = [r.get("server_stats", {}).get("model_ms", {}) for r in rows]
        one = [m.get("1") for m in model if m.get("1")]
        out[level] = {
            "throughput_rps": statistics.median(r["throughput_rps"] for r in rows),
            "p50_ms": statistics.median(r["p50_ms"] for r in rows),
            "p99_ms": statistics.median(r["p99_ms"] for r in rows),
            "model_ms_batch_1": round(statistics.median(one), 3) if one else None,
            "runs": [{k: r[k] for k in ("throughput_rps", "p50_ms", "p99_ms")} for r in rows],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", type=Path, action="append", default=[])
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks" / ".work" / "serve")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    bundle, images = make_bundle(args.data.resolve(), args.work)
    checkouts = [REPO, *(c.resolve() for c in args.checkout)]
    runs: dict[str, list[dict[str, Any]]] = {str(c): [] for c in checkouts}
    for repeat in range(args.repeats):
        for n, checkout in enumerate(checkouts):
            log = args.work / f"serve-{n}-{repeat}.log"
            runs[str(checkout)].append(serve_once(checkout, bundle, images, args.seconds, log))
    found = {
        "command": " ".join([os.path.relpath(sys.executable), "-m", "benchmarks.serve_overhead"])
        + "".join(f" {a}" for a in sys.argv[1:]),
        "seconds_per_level": args.seconds,
        "servers": {checkout: summarize(rows) for checkout, rows in runs.items()},
    }
    text = json.dumps(found, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
