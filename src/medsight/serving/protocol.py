"""uvicorn's HTTP/1.1 protocol with the two things a public server needs that it lacks.

- **A deadline for slow clients.** uvicorn times out an idle keep-alive connection but not a
  client that trickles its headers or body a byte at a time: forty such connections hold a
  server's sockets for as long as they like. Here every request must arrive whole (headers and
  body) within ``request_timeout`` seconds of the connection opening, or of the previous
  response ending; otherwise it gets a 408 and the connection is closed.
- **The documented error shape for malformed HTTP** (an invalid Content-Length, a broken
  request line): ``{"error": "bad_request", "detail": ...}`` instead of uvicorn's plain text.
"""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

DEFAULT_REQUEST_TIMEOUT = 30.0


class TimedH11Protocol(H11Protocol):
    """:class:`H11Protocol` with a whole-request deadline and JSON 400s (see the module)."""

    request_timeout = DEFAULT_REQUEST_TIMEOUT
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED):
            self._disarm()  # the whole request is in: the application's time is its own

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request on this connection gets its own deadline

    def send_400_response(self, msg: str) -> None:
        self._send_error(400, "bad_request", f"malformed HTTP request: {msg}")

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.request_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or self.conn.their_state in (h11.DONE, h11.CLOSED):
            return
        if self.conn.their_state is h11.IDLE and not self.conn.trailing_data[0]:
            self._close()  # an idle connection, no byte of a request: nothing to answer
            return
        detail = f"the request did not arrive within {self.request_timeout:g} s"
        if self.cycle is not None and not self.cycle.response_complete:
            if self.cycle.response_started:
                self._close()
                return
            self.cycle.disconnected = True  # the application's answer, if any, is dropped
        self._send_error(408, "request_timeout", detail)

    def _send_error(self, status: int, code: str, detail: str) -> None:
        """The response written as bytes, not through h11, whose state machine refuses a
        response to a request it has not seen whole."""
        body = json.dumps({"error": code, "detail": detail}).encode()
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            "content-type: application/json\r\n"
            f"content-length: {len(body)}\r\n"
            "connection: close\r\n\r\n"
        )
        self.transport.write(head.encode("ascii") + body)
        self._close()

    def _close(self) -> None:
        self._disarm()
        self.transport.close()


def timed_protocol(request_timeout: float) -> type[TimedH11Protocol]:
    """:class:`TimedH11Protocol` with its deadline set (uvicorn takes a class, not an object)."""
    if not request_timeout > 0:
        raise ValueError(f"request_timeout must be positive seconds, not {request_timeout!r}")
    return type("TimedH11Protocol", (TimedH11Protocol,), {"request_timeout": request_timeout})
