"""Slow and malformed clients against the server's own HTTP protocol (medsight.serving.protocol).

A real uvicorn server on a free port, with a one-second request deadline and a tiny app (the
deadline is the protocol's, not any route's), talked to over raw sockets.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import pytest
import uvicorn
from fastapi import FastAPI, Request

from medsight.serving.protocol import timed_protocol

TIMEOUT = 1.0


def _app() -> FastAPI:
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"received": len(await request.body())}

    @app.get("/slow")
    async def slow() -> dict[str, str]:
        await asyncio.sleep(TIMEOUT * 1.5)  # longer than the deadline, after the request is in
        return {"status": "done"}

    return app


@pytest.fixture(scope="module")
def port():
    config = uvicorn.Config(
        _app(), host="127.0.0.1", port=0, http=timed_protocol(TIMEOUT), log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.02)
    yield server.servers[0].sockets[0].getsockname()[1]
    server.should_exit = True
    thread.join(10)


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT * 5)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def _request(path: str, body: bytes = b"", method: str = "POST") -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


def test_trickled_headers_get_a_408_in_the_error_shape_and_are_disconnected(port):
    sock = _connect(port)
    start = time.monotonic()
    sock.sendall(b"POST /echo HTTP/1.1\r\nHost: te")
    time.sleep(TIMEOUT / 2)
    sock.sendall(b"st\r\n")  # still no blank line: the headers never end
    raw = _read_all(sock)
    waited = time.monotonic() - start
    status, headers, body = _response(raw)
    assert status == 408
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["error"] == "request_timeout"
    assert TIMEOUT * 0.9 <= waited < TIMEOUT * 4  # counted from the connection, not each byte


def test_a_body_that_stops_short_gets_a_408(port):
    sock = _connect(port)
    sock.sendall(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
    status, _, body = _response(_read_all(sock))
    assert status == 408
    assert "did not arrive within 1 s" in json.loads(body)["detail"]


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(port):
    sock = _connect(port)
    start = time.monotonic()
    assert _read_all(sock) == b""
    assert time.monotonic() - start < TIMEOUT * 4


def test_keep_alive_requests_each_get_their_own_deadline(port):
    sock = _connect(port)
    for _ in range(3):  # 3 x 0.6 s on one connection: longer than one deadline in all
        time.sleep(TIMEOUT * 0.6)
        sock.sendall(_request("/echo", b"abc"))
        raw = b""
        while not raw.endswith(b"}"):
            raw += sock.recv(65536)
        status, _, body = _response(raw)
        assert (status, json.loads(body)) == (200, {"received": 3})
    sock.close()


def test_a_slow_application_is_not_cut_off_once_the_request_is_in(port):
    sock = _connect(port)
    sock.sendall(b"GET /slow HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
    status, _, body = _response(_read_all(sock))
    assert (status, json.loads(body)) == (200, {"status": "done"})


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: abc\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: -5\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"NOT A REQUEST LINE\r\n\r\n",
    ],
    ids=["letters", "negative", "two-lengths", "request-line"],
)
def test_malformed_http_gets_a_400_in_the_error_shape(port, request_bytes):
    sock = _connect(port)
    sock.sendall(request_bytes)
    status, headers, body = _response(_read_all(sock))
    assert status == 400
    assert headers["content-type"] == "application/json"
    answer = json.loads(body)
    assert answer["error"] == "bad_request" and answer["detail"].startswith("malformed HTTP")


def test_a_deadline_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        timed_protocol(0)
