"""HTTP plumbing of the REST API: one error shape, the API-key check, response headers."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable

from fastapi import FastAPI, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from medsight.serving.logs import printable

PAGE_CSP = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
log = logging.getLogger("medsight.serving")
INTERNAL_ERROR = (500, "internal_error", "the server failed on this request; see its log")


class ApiError(Exception):
    """A request the API refuses: sent as ``{"error": code, "detail": message}``."""

    def __init__(self, status: int, error: str, detail: str):
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


def error_response(status: int, error: str, detail: str, headers: dict | None = None) -> Response:
    return JSONResponse({"error": error, "detail": detail}, status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """One error shape everywhere, FastAPI's own validation and routing errors included (its
    default 422 body echoes the input, which may carry patient data)."""

    async def refused(_: Request, exc: ApiError) -> Response:
        return error_response(exc.status, exc.error, exc.detail)

    async def http_error(_: Request, exc: HTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), exc.headers)

    async def invalid(_: Request, exc: RequestValidationError) -> Response:
        problems = [
            f"{'/'.join(str(part) for part in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
            for e in exc.errors()
        ]
        return error_response(422, "invalid_request", "; ".join(problems))

    async def crashed(_: Request, exc: Exception) -> Response:
        return error_response(*INTERNAL_ERROR)

    app.add_exception_handler(ApiError, refused)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(Exception, crashed)


def api_key_check(api_key: str) -> Callable[[str | None], None]:
    """A FastAPI dependency: the ``X-API-Key`` header must equal ``api_key`` (constant-time)."""
    expected = api_key.encode()
    header = APIKeyHeader(name="X-API-Key", auto_error=False)

    def check(given: str | None = Security(header)) -> None:
        if not given:
            detail = "this server needs an API key: send it in the X-API-Key header"
            raise ApiError(401, "missing_api_key", detail)
        if not hmac.compare_digest(given.encode(), expected):
            raise ApiError(403, "wrong_api_key", "the X-API-Key header holds a wrong API key")

    return check


class HeadersAndLog:
    """Security headers, no caching of results, and the one log line per request: client,
    method, path, status and time only (never a file name, a form field or a header value).
    ``medsight serve`` turns uvicorn's own access line off: two lines per request were 7 % of
    the event loop's time under load.

    A plain ASGI middleware: Starlette's ``BaseHTTPMiddleware`` (``app.middleware("http")``)
    runs every response through an extra task and stream, a sixth of the event loop's time
    under load in a profile of ``medsight serve`` (benchmarks/RESULTS.md)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, path = time.perf_counter(), scope["path"]
        extra = _security_headers(path)
        names = {name for name, _ in extra}
        status: int | None = None

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": kept + extra}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:  # a crash still gets the error shape, the headers and its log line
            log.exception("%s %s failed", scope["method"], printable(path))
            if status is not None:
                raise  # the response has begun: nothing else can be sent on it
            await error_response(*INTERNAL_ERROR)(scope, receive, send_with_headers)
        elapsed = (time.perf_counter() - start) * 1000
        client = scope.get("client")  # from X-Forwarded-For behind a proxy: escaped as well
        who = printable(f"{client[0]}:{client[1]}") if client else "-"
        # the decoded path: escape bytes and NUL from the URL are escaped, whichever handler writes
        log.info("%s %s %s %d %.1f ms", who, scope["method"], printable(path), status or 0, elapsed)


def _security_headers(path: str) -> list[tuple[bytes, bytes]]:
    headers = [(b"x-content-type-options", b"nosniff")]
    if path.startswith(("/v1/", "/v2/")):
        headers.append((b"cache-control", b"no-store"))  # results are about a patient
    if path == "/" or path.startswith("/static/"):
        headers.append((b"content-security-policy", PAGE_CSP.encode()))  # nothing from elsewhere
    return headers
