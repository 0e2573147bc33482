"""Closed-loop HTTP load: ``concurrency`` clients each upload an image, wait, and upload the next.

Runs as its own process (standard library only), so the client never shares an interpreter or a
GIL with the server it measures. Every client first sends one untimed request (connections,
lazy initialisation, the first model call), then requests until ``seconds`` have passed; the
requests started by then are waited for and counted, so slow answers under load are not
dropped from the percentiles.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


def multipart(field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with one file field, and its content type."""
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
        f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    return (
        head + data + f"\r\n--{boundary}--\r\n".encode(),
        f"multipart/form-data; boundary={boundary}",
    )


def post(url: str, body: bytes, content_type: str, timeout: float = 120.0) -> int:
    """One request on a new connection; returns the HTTP status (0: no answer)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request("POST", parts.path, body, {"Content-Type": content_type})
        response = connection.getresponse()
        response.read()
        return response.status
    except OSError:
        return 0
    finally:
        connection.close()


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between ranks (numpy's default);
    NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def run_load(
    url: str, images: list[tuple[str, bytes]], concurrency: int, seconds: float, field: str = "file"
) -> dict[str, Any]:
    """Latency percentiles (ms) and throughput (requests/s) of ``concurrency`` closed-loop
    clients cycling through ``images`` for ``seconds`` after one untimed request each."""
    bodies = [multipart(field, name, data) for name, data in images]
    latencies: list[float] = []
    failures = [0]
    statuses: dict[int, int] = {}  # every counted answer by status (0: none), errors included
    lock = threading.Lock()
    window: dict[str, float] = {}

    def open_window() -> None:  # run once, when every client has warmed up
        window["start"] = time.perf_counter()
        window["end"] = window["start"] + seconds

    ready = threading.Barrier(concurrency, action=open_window)

    def client(index: int) -> None:
        post(url, *bodies[index % len(bodies)])  # warm-up, untimed
        ready.wait()
        sent = index
        while time.perf_counter() < window["end"]:
            begin = time.perf_counter()
            status = post(url, *bodies[sent % len(bodies)])
            elapsed = time.perf_counter() - begin
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200:
                    latencies.append(elapsed * 1000)
                else:
                    failures[0] += 1
            sent += concurrency

    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    duration = time.perf_counter() - window["start"]

    def ms(value: float) -> float | None:
        return round(value, 2) if latencies else None

    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": failures[0],
        "duration_s": round(duration, 3),
        "throughput_rps": round(len(latencies) / duration, 2),
        "p50_ms": ms(percentile(latencies, 50)),
        "p95_ms": ms(percentile(latencies, 95)),
        "p99_ms": ms(percentile(latencies, 99)),
        "mean_ms": ms(sum(latencies) / max(1, len(latencies))),
        "statuses": {str(code): statuses[code] for code in sorted(statuses)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="e.g. http://127.0.0.1:8000/v1/predict")
    parser.add_argument("images", nargs="+", type=Path, help="image files to upload in turn")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--field", default="file", help="form field of the upload")
    args = parser.parse_args()
    images = [(path.name, path.read_bytes()) for path in args.images]
    print(json.dumps(run_load(args.url, images, args.concurrency, args.seconds, args.field)))


if __name__ == "__main__":
    main()
