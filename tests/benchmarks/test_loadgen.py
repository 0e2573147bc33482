"""The serving load generator against tiny HTTP servers, and the serving harness around it."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from benchmarks import serving
from benchmarks.loadgen import multipart, percentile, run_load

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass

class Server(ThreadingHTTPServer):
    request_queue_size = 128

Server(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


class Recorder(BaseHTTPRequestHandler):
    """Answers 200 to uploads with a ``file`` field (500 when the file starts with 'bad')."""

    uploads: list[bytes] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Recorder.uploads.append(body)
        # the file's bytes follow the part's blank line; the random boundary is hex and may
        # itself contain "bad", so the bare substring is not enough
        ok = b'name="file"' in body and b"\r\n\r\nbad" not in body
        self.send_response(200 if ok else 500)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


class Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default 5 refuses connections when the machine is busy


@pytest.fixture()
def server() -> Iterator[str]:
    Recorder.uploads = []
    httpd = Server(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/predict"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("q", [0, 25, 50, 95, 99, 100])
def test_percentile_matches_numpy(q: float) -> None:
    values = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0]
    assert percentile(values, q) == pytest.approx(np.percentile(values, q))


def test_multipart_body_carries_the_file() -> None:
    body, content_type = multipart("file", "x.png", b"PIXELS")
    boundary = content_type.split("boundary=")[1]
    assert content_type.startswith("multipart/form-data")
    assert body.startswith(f"--{boundary}\r\n".encode()) and body.endswith(
        f"--{boundary}--\r\n".encode()
    )
    assert b'name="file"; filename="x.png"' in body and b"\r\n\r\nPIXELS\r\n" in body


@pytest.mark.parametrize("concurrency", [1, 4])
def test_run_load_counts_every_answered_request(server: str, concurrency: int) -> None:
    stats = run_load(server, [("a.png", b"one"), ("b.png", b"two")], concurrency, seconds=0.3)
    assert stats["concurrency"] == concurrency and stats["errors"] == 0
    assert stats["requests"] > 0
    # one untimed warm-up request per client, then the counted ones
    assert len(Recorder.uploads) == stats["requests"] + concurrency
    assert stats["throughput_rps"] == pytest.approx(stats["requests"] / stats["duration_s"], 0.01)
    assert stats["p50_ms"] <= stats["p95_ms"] <= stats["p99_ms"]


def test_run_load_counts_errors_apart(server: str) -> None:
    stats = run_load(server, [("a.png", b"good"), ("b.png", b"bad")], 1, seconds=1.5)
    assert stats["requests"] >= 2 and stats["errors"] > 0
    assert abs(stats["requests"] - stats["errors"]) <= 1  # alternating good and bad uploads


def test_load_generator_runs_as_its_own_process(server: str, tmp_path: Path) -> None:
    image = tmp_path / "x.png"
    image.write_bytes(b"pixels")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.loadgen", server, str(image), "--concurrency", "2"]
        + ["--seconds", "0.3"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
    )
    stats = json.loads(done.stdout)
    assert stats["concurrency"] == 2 and stats["requests"] > 0 and stats["errors"] == 0


def test_measure_starts_drives_and_stops_a_server(tmp_path: Path) -> None:
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    image = tmp_path / "x.png"
    image.write_bytes(b"pixels")
    port = serving.free_port()
    base = f"http://127.0.0.1:{port}"
    found = serving.measure(
        [sys.executable, str(script), str(port)],
        f"{base}/health",
        f"{base}/predict",
        [image],
        [1, 3],
        0.3,
        tmp_path / "server.log",
        {},
    )
    assert list(found) == ["1", "3"]
    assert all(level["requests"] > 0 and level["errors"] == 0 for level in found.values())
    with pytest.raises(OSError):  # stopped afterwards
        serving.urllib.request.urlopen(f"{base}/health", timeout=1)


def test_a_server_that_dies_is_reported(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="server exited with code 3"):
        with serving.running(
            [sys.executable, "-c", "raise SystemExit(3)"],
            "http://127.0.0.1:9/health",
            tmp_path / "log",
            {},
        ):
            pass


def test_medsight_serve_under_the_load_generator(
    xray_bundle: Path, chest_xray_dir: Path, tmp_path: Path
) -> None:
    """The medsight half of the serving comparison, on a tiny bundle and real X-rays."""
    from benchmarks.run import environments

    images = sorted((chest_xray_dir / "test" / "NORMAL").glob("*.jpeg"))[:2]
    port = serving.free_port()
    base = f"http://127.0.0.1:{port}"
    medsight = Path(sys.executable).with_name("medsight")
    found = serving.measure(
        [str(medsight), "serve", str(xray_bundle), "--port", str(port)],
        f"{base}/healthz",
        f"{base}/v1/predict",
        images,
        [2],
        0.5,
        tmp_path / "serve.log",
        environments()["medsight"],
        stats_url=f"{base}/v1/stats",
    )
    assert found["2"]["requests"] > 0 and found["2"]["errors"] == 0
    # the server's own account of what ran: every image counted, each batch size timed
    stats = found["2"]["server_stats"]
    assert stats["engine"] in ("onnxruntime", "onnxruntime-int8", "pytorch")
    assert stats["images"] >= found["2"]["requests"]
    assert stats["model_ms"].keys() == stats["batch_sizes"].keys()
    assert all(ms > 0 for ms in stats["model_ms"].values())
