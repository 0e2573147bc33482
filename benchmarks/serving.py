"""Serving: ``medsight serve BUNDLE`` against tutorial (d)'s Flask + Keras app, same model.

Each server runs alone on 127.0.0.1 while :mod:`benchmarks.loadgen`, a separate process, drives
it at each concurrency level for a bounded time with the same image files. After each level
medsight's own ``/v1/stats`` is read: its engine and the mean time of its model calls per batch
size, from which the report takes the compute floor (one image's model time at concurrency 1).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, timeout: float) -> None:
    """Return once ``url`` answers 200; raise if the server exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"server exited with code {process.returncode} before {url} answered"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


@contextmanager
def running(
    command: list[str], health_url: str, log: Path, env: dict[str, str]
) -> Iterator[subprocess.Popen]:
    """A server process, healthy inside the block, stopped (SIGTERM, then SIGKILL) after it."""
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        try:
            wait_healthy(health_url, process, timeout=300)
            yield process
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def load(url: str, images: list[Path], concurrency: int, seconds: float) -> dict[str, Any]:
    """One concurrency level, measured by the load generator in its own process."""
    command = [sys.executable, "-m", "benchmarks.loadgen", url, *map(str, images)]
    command += ["--concurrency", str(concurrency), "--seconds", str(seconds)]
    done = subprocess.run(
        command, capture_output=True, text=True, check=True, cwd=REPO, timeout=seconds + 900
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def measure(
    command: list[str],
    health_url: str,
    predict_url: str,
    images: list[Path],
    levels: list[int],
    seconds: float,
    log: Path,
    env: dict[str, str],
    stats_url: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Concurrency level (as text: a JSON key) -> the load generator's figures, with the
    server's own statistics after that level (``server_stats``) when it has a ``stats_url``."""
    found = {}
    with running(command, health_url, log, env):
        for level in levels:
            found[str(level)] = load(predict_url, images, level, seconds)
            if stats_url:
                found[str(level)]["server_stats"] = get_json(stats_url)
    return found


def compare(
    recipe: str,
    bundle: Path,
    images: list[Path],
    levels: list[int],
    seconds: float,
    keras_python: Path,
    envs: dict[str, dict[str, str]],
    logs: Path,
) -> dict[str, Any]:
    """Both servers on the same model architecture and images, one after the other."""
    medsight = Path(sys.executable).with_name("medsight")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    ours = measure(
        [str(medsight), "serve", str(bundle), "--port", str(port)],
        f"{base}/healthz",
        f"{base}/v1/predict",
        images,
        levels,
        seconds,
        logs / f"serve-medsight-{recipe}.log",
        envs["medsight"],
        stats_url=f"{base}/v1/stats",
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    theirs = measure(
        [str(keras_python), "-m", "benchmarks.flask_keras_server", "--recipe", recipe]
        + ["--port", str(port)],
        f"{base}/health",
        f"{base}/predict",
        images,
        levels,
        seconds,
        logs / f"serve-flask-keras-{recipe}.log",
        envs["keras"],
    )
    engine = ours[str(levels[0])]["server_stats"]["engine"]
    return {"medsight": ours, "flask_keras": theirs, "engine": engine}


def main() -> None:
    """Serving alone, both servers, on bundles a ``benchmarks.run`` left in its work folder:
    the same measurement and verdicts as the full run's serving phase, without retraining."""
    import argparse

    from benchmarks import report
    from benchmarks.flops import model_costs, peak_gflops
    from benchmarks.run import KERAS_PYTHON, LEVELS, SERVING_RECIPES, environments
    from benchmarks.workloads import WORKLOADS, image_files, spread

    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="a benchmarks.run --work folder")
    parser.add_argument("--recipes", nargs="+", choices=SERVING_RECIPES, default=SERVING_RECIPES)
    parser.add_argument("--seconds", type=float, default=30.0, help="per concurrency level")
    parser.add_argument("--keras-python", type=Path, default=KERAS_PYTHON)
    args = parser.parse_args()
    envs, found = environments(), {}
    for name in args.recipes:
        images = spread(image_files(args.work / "data" / WORKLOADS[name].dataset), 16)
        bundle = args.work / "bundles" / name
        measured = compare(
            name, bundle, images, LEVELS, args.seconds, args.keras_python, envs, args.work / "logs"
        )
        forward = model_costs(name, seconds=0.5)["forward_gflop_per_image"]
        found[name] = {**measured, "forward_gflop_per_image": forward}
    peak = peak_gflops(seconds=3.0)["peak_gflops"]
    for serving in found.values():
        report.assess_serving(serving, peak)
    print(json.dumps({"peak_gflops": peak, "seconds_per_level": args.seconds, "serving": found}))


if __name__ == "__main__":
    main()
