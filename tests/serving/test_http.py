"""The REST API's HTTP plumbing on a tiny app: one error shape for every refusal (routing and
validation errors included, crashes without their text), the API key, the security headers and
an access log that holds method, path and status only."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from fastapi import Depends, FastAPI
from fastapi.responses import HTMLResponse
from fastapi.testclient import TestClient
from starlette.exceptions import HTTPException

from medsight.serving.http import (
    PAGE_CSP,
    ApiError,
    HeadersAndLog,
    api_key_check,
    error_response,
    install_error_handlers,
)

API_KEY = "s3cret-key"
SECRET_TEXT = "Doe^Jane MRN-4711"


def make_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(HeadersAndLog)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return "<html><body>medsight</body></html>"

    @app.get("/static/app.js")
    def script() -> dict:
        return {"js": True}

    @app.get("/v1/ok")
    def ok() -> dict:
        return {"ok": True}

    @app.get("/health")
    def health() -> dict:
        return {"status": "up"}

    @app.get("/v1/refuse")
    def refuse() -> dict:
        raise ApiError(409, "conflict_here", "this cannot be done")

    @app.get("/v1/limited")
    def limited() -> dict:
        raise HTTPException(429, "slow down", headers={"Retry-After": "7"})

    @app.get("/v1/crash")
    def crash() -> dict:
        raise RuntimeError(f"patient {SECRET_TEXT} broke the model")

    @app.get("/v1/items/{n}")
    def items(n: int, size: int = 1) -> dict:
        return {"n": n, "size": size}

    @app.post("/v1/only-post")
    def only_post() -> dict:
        return {"posted": True}

    @app.get("/v1/guarded", dependencies=[Depends(api_key_check(API_KEY))])
    def guarded() -> dict:
        return {"secret": "granted"}

    return app


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    # a crash must come back as the 500 response, not be re-raised into the test
    with TestClient(make_app(), raise_server_exceptions=False) as test_client:
        yield test_client


def test_error_response_shape() -> None:
    response = error_response(418, "teapot", "short and stout", headers={"X-A": "1"})
    assert response.status_code == 418 and response.headers["x-a"] == "1"
    assert response.body == b'{"error":"teapot","detail":"short and stout"}'


def test_api_error_keeps_its_fields() -> None:
    exc = ApiError(422, "invalid_field", "field 'x' is too long")
    assert (exc.status, exc.error, exc.detail) == (422, "invalid_field", "field 'x' is too long")
    assert str(exc) == "field 'x' is too long"


def test_api_error_gives_error_and_detail_with_its_status(client: TestClient) -> None:
    response = client.get("/v1/refuse")
    assert response.status_code == 409
    assert response.json() == {"error": "conflict_here", "detail": "this cannot be done"}


@pytest.mark.parametrize(
    ("method", "path", "status", "error"),
    [
        ("GET", "/v1/nowhere", 404, "not_found"),
        ("GET", "/nothing/here", 404, "not_found"),
        ("GET", "/v1/only-post", 405, "method_not_allowed"),
        ("DELETE", "/v1/ok", 405, "method_not_allowed"),
        ("GET", "/v1/limited", 429, "http_error"),
    ],
)
def test_routing_and_http_errors_use_the_shape(
    client: TestClient, method: str, path: str, status: int, error: str
) -> None:
    response = client.request(method, path)
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"error", "detail"} and body["error"] == error
    assert isinstance(body["detail"], str) and body["detail"]


def test_http_exception_keeps_its_detail_and_headers(client: TestClient) -> None:
    response = client.get("/v1/limited")
    assert response.json() == {"error": "http_error", "detail": "slow down"}
    assert response.headers["retry-after"] == "7"


def test_405_says_which_methods_are_allowed(client: TestClient) -> None:
    response = client.get("/v1/only-post")
    assert response.headers["allow"] == "POST"


def test_validation_errors_use_the_shape_without_echoing_the_input(client: TestClient) -> None:
    response = client.get(f"/v1/items/{SECRET_TEXT}", params={"size": "Jane-Doe-1961"})
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_request"
    assert "path/n" in body["detail"] and "query/size" in body["detail"]
    assert "Doe" not in response.text and "MRN" not in response.text


def test_a_crash_gives_500_internal_error_without_the_exception_text(client: TestClient) -> None:
    response = client.get("/v1/crash")
    assert response.status_code == 500
    assert response.json() == {
        "error": "internal_error",
        "detail": "the server failed on this request; see its log",
    }
    assert SECRET_TEXT not in response.text and "RuntimeError" not in response.text


def test_a_crash_response_still_has_the_security_headers(client: TestClient) -> None:
    response = client.get("/v1/crash")
    assert response.status_code == 500
    assert response.headers.get("x-content-type-options") == "nosniff"
    assert response.headers.get("cache-control") == "no-store"


@pytest.mark.parametrize(
    ("headers", "status", "error"),
    [
        ({}, 401, "missing_api_key"),
        ({"X-API-Key": ""}, 401, "missing_api_key"),
        ({"X-API-Key": "wrong"}, 403, "wrong_api_key"),
        ({"X-API-Key": API_KEY + "x"}, 403, "wrong_api_key"),
        ({"X-API-Key": API_KEY[:-1]}, 403, "wrong_api_key"),
        ({"X-API-Key": API_KEY.upper()}, 403, "wrong_api_key"),
        ({"Authorization": f"Bearer {API_KEY}"}, 401, "missing_api_key"),
    ],
)
def test_api_key_refusals(client: TestClient, headers: dict, status: int, error: str) -> None:
    response = client.get("/v1/guarded", headers=headers)
    assert response.status_code == status
    assert response.json()["error"] == error
    assert "granted" not in response.text
    assert API_KEY not in response.text  # the refusal never tells the key


def test_the_right_api_key_passes(client: TestClient) -> None:
    response = client.get("/v1/guarded", headers={"X-API-Key": API_KEY})
    assert response.status_code == 200 and response.json() == {"secret": "granted"}
    lower = client.get("/v1/guarded", headers={"x-api-key": API_KEY})  # header names fold
    assert lower.status_code == 200


def test_the_key_check_guards_only_its_routes(client: TestClient) -> None:
    assert client.get("/v1/ok").status_code == 200


@pytest.mark.parametrize(
    "path", ["/", "/static/app.js", "/v1/ok", "/health", "/v1/refuse", "/v1/nowhere", "/x"]
)
def test_nosniff_on_every_response(client: TestClient, path: str) -> None:
    assert client.get(path).headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    ("path", "no_store"),
    [
        ("/v1/ok", True),
        ("/v1/refuse", True),
        ("/v1/nowhere", True),
        ("/v1/guarded", True),
        ("/", False),
        ("/health", False),
        ("/static/app.js", False),
        ("/v1", False),  # only paths under /v1/
    ],
)
def test_no_store_on_v1_paths(client: TestClient, path: str, no_store: bool) -> None:
    headers = client.get(path).headers
    assert (headers.get("cache-control") == "no-store") is no_store


@pytest.mark.parametrize(
    ("path", "csp"),
    [("/", True), ("/static/app.js", True), ("/v1/ok", False), ("/health", False)],
)
def test_csp_on_the_page_and_its_static_files(client: TestClient, path: str, csp: bool) -> None:
    assert (client.get(path).headers.get("content-security-policy") == PAGE_CSP) is csp


def test_page_csp_loads_nothing_from_elsewhere() -> None:
    assert "default-src 'self'" in PAGE_CSP and "frame-ancestors 'none'" in PAGE_CSP
    assert "object-src 'none'" in PAGE_CSP and "http" not in PAGE_CSP


def log_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The server's lines without the client address each starts with (TestClient's)."""
    lines = [r.getMessage() for r in caplog.records if r.name == "medsight.serving"]
    assert all(line.startswith("testclient:50000 ") for line in lines), lines
    return [line.removeprefix("testclient:50000 ") for line in lines]


def test_one_log_line_with_method_path_status(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="medsight.serving"):
        client.get("/v1/refuse")
        client.post("/v1/only-post")
        client.get("/v1/nowhere")
    lines = log_lines(caplog)
    assert len(lines) == 3
    assert lines[0].startswith("GET /v1/refuse 409 ") and lines[0].endswith(" ms")
    assert lines[1].startswith("POST /v1/only-post 200 ")
    assert lines[2].startswith("GET /v1/nowhere 404 ")


def test_the_log_never_holds_query_values_or_header_values(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="medsight.serving"):
        client.get(
            "/v1/ok",
            params={"patient": "Doe^Jane", "mrn": "4711"},
            headers={"X-API-Key": API_KEY, "X-Patient": "Jane-Doe-1961"},
        )
        client.get("/v1/guarded", params={"name": "Doe^Jane"}, headers={"X-API-Key": API_KEY})
        client.get("/v1/guarded", headers={"X-API-Key": "a-wrong-key-value"})
    lines = log_lines(caplog)
    assert [line.split()[:3] for line in lines] == [
        ["GET", "/v1/ok", "200"],
        ["GET", "/v1/guarded", "200"],
        ["GET", "/v1/guarded", "403"],
    ]
    text = "\n".join(lines)
    for secret in ("Doe", "Jane", "4711", "patient", "mrn", "?", API_KEY, "a-wrong-key-value"):
        assert secret not in text
