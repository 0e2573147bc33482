"""Multipart uploads read in memory within a size limit: a valid form's bytes and text fields,
every refusal with its status and code (wrong type, no boundary, too large by header or by
stream, truncated, too many parts, nameless part, disconnect), Form's field rules, and the
OpenAPI body that upload_schema describes."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from starlette.requests import Request as StarletteRequest

from medsight.serving.http import ApiError, install_error_handlers
from medsight.serving.uploads import Form, read_form, upload_schema

LIMIT = 4_000
MAX_PARTS = 3
BOUNDARY = "xXmedsightBoundaryXx"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
# bytes an image may hold that look like multipart syntax: CRLF, dashes, a near-boundary
IMAGE = b"\x89PNG\r\n\x1a\n\x00\xff--" + BOUNDARY[:-2].encode() + b"\r\n\r\n" + bytes(range(256))


def part(name: str | None, data: bytes, filename: str | None = None, mime: str = "") -> bytes:
    disposition = "form-data" + (f'; name="{name}"' if name is not None else "")
    if filename is not None:
        disposition += f'; filename="{filename}"'
    head = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
    if mime:
        head += f"Content-Type: {mime}\r\n"
    return head.encode() + b"\r\n" + data + b"\r\n"


def body(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def valid_body() -> bytes:
    return body(
        part("file", IMAGE, "xray.png", "image/png"),
        part("note", "  über 40 °C  ".encode()),
        part("empty", b""),
    )


def make_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/upload")
    async def upload(request: Request) -> dict:
        form = await read_form(request, LIMIT, max_parts=MAX_PARTS)
        data = form.file()
        return {
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "fields": sorted(form.parts),
            "note": form.text("note"),
            "empty": form.text("empty"),
            "absent": form.text("absent"),
        }

    return app


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(make_app()) as test_client:
        yield test_client


def post(client: TestClient, content: bytes, content_type: str | None = MULTIPART):
    headers = {"Content-Type": content_type} if content_type is not None else {}
    return client.post("/upload", content=content, headers=headers)


def make_request(
    chunks: list[bytes],
    content_type: str | None = MULTIPART,
    content_length: str | None = None,
    disconnect: bool = False,
) -> tuple[StarletteRequest, list[int]]:
    """A Request whose body arrives in the given chunks; also returns how many were read."""
    headers = []
    if content_type is not None:
        headers.append((b"content-type", content_type.encode()))
    if content_length is not None:
        headers.append((b"content-length", content_length.encode()))
    scope = {"type": "http", "method": "POST", "path": "/upload", "headers": headers}
    messages = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1 or disconnect}
        for i, chunk in enumerate(chunks)
    ]
    if disconnect:
        messages.append({"type": "http.disconnect"})
    received = [0]

    async def receive() -> dict:
        received[0] += 1
        return messages.pop(0)

    return StarletteRequest(scope, receive), received


def read(request: StarletteRequest, max_bytes: int = LIMIT, max_parts: int = MAX_PARTS) -> Form:
    return asyncio.run(read_form(request, max_bytes, max_parts))


def test_a_valid_upload_gives_the_file_bytes_and_text_fields(client: TestClient) -> None:
    response = post(client, valid_body())
    assert response.status_code == 200, response.text
    assert response.json() == {
        "size": len(IMAGE),
        "sha256": hashlib.sha256(IMAGE).hexdigest(),
        "fields": ["empty", "file", "note"],
        "note": "über 40 °C",
        "empty": None,
        "absent": None,
    }


def test_a_form_built_by_the_http_client_is_read(client: TestClient) -> None:
    response = client.post(
        "/upload", files={"file": ("x.png", IMAGE, "image/png")}, data={"note": "hi"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["sha256"] == hashlib.sha256(IMAGE).hexdigest()
    assert response.json()["note"] == "hi"


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 10_000])
def test_the_body_may_arrive_in_chunks_of_any_size(chunk_size: int) -> None:
    data = valid_body()
    chunks = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]
    form = read(make_request(chunks)[0])
    assert form.file() == IMAGE and form.text("note") == "über 40 °C"


def test_the_first_of_two_fields_with_one_name_wins() -> None:
    data = body(part("file", b"first"), part("file", b"second"))
    assert read(make_request([data])[0]).file() == b"first"


def test_a_body_of_exactly_the_limit_is_accepted() -> None:
    head = body(part("file", b""))
    data = body(part("file", b"a" * (LIMIT - len(head))))
    assert len(data) == LIMIT
    form = read(make_request([data], content_length=str(LIMIT))[0])
    assert form.file() == b"a" * (LIMIT - len(head))


@pytest.mark.parametrize(
    ("content_type", "status", "error", "hint"),
    [
        (None, 415, "unsupported_media_type", "no Content-Type"),
        ("application/json", 415, "unsupported_media_type", "application/json"),
        ("image/png", 415, "unsupported_media_type", "image/png"),
        ("multipart/mixed; boundary=abc", 415, "unsupported_media_type", "multipart/mixed"),
        ("application/x-www-form-urlencoded", 415, "unsupported_media_type", "urlencoded"),
        ("multipart/form-data", 400, "malformed_multipart", "without a boundary"),
        ("multipart/form-data; boundary=", 400, "malformed_multipart", "without a boundary"),
        ("multipart/form-data; charset=utf-8", 400, "malformed_multipart", "boundary"),
    ],
)
def test_refused_content_types(
    client: TestClient, content_type: str | None, status: int, error: str, hint: str
) -> None:
    response = post(client, valid_body(), content_type)
    assert response.status_code == status
    assert response.json()["error"] == error and hint in response.json()["detail"]


def test_the_415_explains_how_to_upload(client: TestClient) -> None:
    detail = post(client, b"{}", "application/json").json()["detail"]
    assert "multipart/form-data" in detail and "curl -F file=@" in detail


@pytest.mark.parametrize(
    ("data", "error", "hint"),
    [
        (valid_body()[:-10], "malformed_multipart", "closing boundary"),
        (valid_body()[: len(valid_body()) // 2], "malformed_multipart", "closing boundary"),
        (b"", "malformed_multipart", "closing boundary"),
        (b"this is not multipart at all", "malformed_multipart", "invalid multipart body"),
        (
            body(*(part(f"f{i}", b"x") for i in range(MAX_PARTS + 1))),
            "malformed_multipart",
            f"more than {MAX_PARTS} form fields",
        ),
        (body(part(None, IMAGE, "x.png")), "malformed_multipart", "no Content-Disposition name"),
        (
            f"--{BOUNDARY}\r\nContent-Type: image/png\r\n\r\nabc\r\n--{BOUNDARY}--\r\n".encode(),
            "malformed_multipart",
            "no Content-Disposition name",
        ),
    ],
    ids=[
        "truncated-end",
        "truncated-half",
        "empty",
        "garbage",
        "too-many-parts",
        "nameless-part",
        "no-disposition",
    ],
)
def test_malformed_bodies_are_400(client: TestClient, data: bytes, error: str, hint: str) -> None:
    response = post(client, data)
    assert response.status_code == 400
    assert response.json()["error"] == error and hint in response.json()["detail"]


def test_exactly_max_parts_is_accepted() -> None:
    data = body(part("file", b"img"), *(part(f"f{i}", b"x") for i in range(MAX_PARTS - 1)))
    assert read(make_request([data])[0]).file() == b"img"


def test_a_declared_length_over_the_limit_is_413_before_reading() -> None:
    request, received = make_request([valid_body()], content_length=str(LIMIT + 1))
    with pytest.raises(ApiError) as caught:
        read(request)
    assert (caught.value.status, caught.value.error) == (413, "upload_too_large")
    assert f"{LIMIT + 1} bytes exceeds the limit of {LIMIT}" in caught.value.detail
    assert received[0] == 0  # not one chunk of the body was read


def test_a_declared_length_over_the_limit_is_413_over_http(client: TestClient) -> None:
    data = body(part("file", b"a" * (LIMIT + 100)))
    response = post(client, data)
    assert response.status_code == 413 and response.json()["error"] == "upload_too_large"


@pytest.mark.parametrize(
    "content_length", [None, "10", "not-a-number"], ids=["no-length", "lying-length", "bad-length"]
)
def test_a_body_that_grows_over_the_limit_is_413(content_length: str | None) -> None:
    data = body(part("file", b"a" * (3 * LIMIT)))
    chunks = [data[i : i + 1000] for i in range(0, len(data), 1000)]
    request, received = make_request(chunks, content_length=content_length)
    with pytest.raises(ApiError) as caught:
        read(request)
    assert (caught.value.status, caught.value.error) == (413, "upload_too_large")
    assert received[0] == LIMIT // 1000 + 1  # stops at the first chunk past the limit


def test_a_client_disconnect_is_400() -> None:
    data = valid_body()
    request, _ = make_request([data[:50]], disconnect=True)
    with pytest.raises(ApiError) as caught:
        read(request)
    assert (caught.value.status, caught.value.error) == (400, "client_disconnected")


def test_form_file_returns_the_named_field() -> None:
    form = Form({"file": b"abc", "image": b"def"})
    assert form.file() == b"abc" and form.file("image") == b"def"


@pytest.mark.parametrize("name", ["file", "image"])
def test_form_file_missing_is_422_missing_file(name: str) -> None:
    with pytest.raises(ApiError) as caught:
        Form({"other": b"x"}).file(name)
    assert (caught.value.status, caught.value.error) == (422, "missing_file")
    assert repr(name) in caught.value.detail and "curl -F" in caught.value.detail


def test_missing_file_over_http(client: TestClient) -> None:
    response = post(client, body(part("note", b"hello")))
    assert response.status_code == 422 and response.json()["error"] == "missing_file"


@pytest.mark.parametrize(
    ("parts", "max_chars", "expected"),
    [
        ({}, 200, None),
        ({"t": b""}, 200, None),
        ({"t": b"   \r\n\t "}, 200, None),
        ({"t": b"  hello  "}, 200, "hello"),
        ({"t": "é" * 5}, 5, "é" * 5),  # characters, not bytes
        ({"t": b"x" * 200}, 200, "x" * 200),
        ({"t": b"  " + b"x" * 10 + b"  "}, 10, "x" * 10),  # the limit is on the stripped text
    ],
)
def test_form_text_accepts(parts: dict, max_chars: int, expected: str | None) -> None:
    parts = {k: v.encode() if isinstance(v, str) else v for k, v in parts.items()}
    assert Form(parts).text("t", max_chars=max_chars) == expected


@pytest.mark.parametrize(
    ("value", "max_chars", "hint"),
    [
        (b"x" * 201, 200, "longer than 200"),
        (b"abcdef", 5, "longer than 5"),
        (b"\xff\xfe\x00bad", 200, "not UTF-8"),
        (b"caf\xe9", 200, "not UTF-8"),  # latin-1, not UTF-8
    ],
)
def test_form_text_refusals_are_422(value: bytes, max_chars: int, hint: str) -> None:
    with pytest.raises(ApiError) as caught:
        Form({"t": value}).text("t", max_chars=max_chars)
    assert (caught.value.status, caught.value.error) == (422, "invalid_field")
    assert "'t'" in caught.value.detail and hint in caught.value.detail


def test_a_non_utf8_text_field_over_http_is_422(client: TestClient) -> None:
    data = body(part("file", IMAGE), part("note", b"\xff\xfe"))
    response = post(client, data)
    assert response.status_code == 422 and response.json()["error"] == "invalid_field"


def test_upload_schema_shape() -> None:
    schema = upload_schema()
    assert schema["requestBody"]["required"] is True
    content = schema["requestBody"]["content"]
    assert list(content) == ["multipart/form-data"]
    body_schema = content["multipart/form-data"]["schema"]
    assert body_schema["type"] == "object" and body_schema["required"] == ["file"]
    assert list(body_schema["properties"]) == ["file"]
    file = body_schema["properties"]["file"]
    assert file["type"] == "string" and file["format"] == "binary"


def test_upload_schema_adds_the_text_fields() -> None:
    note = {"type": "string", "maxLength": 200}
    props = upload_schema(note=note, method={"type": "string", "enum": ["gradcam"]})["requestBody"][
        "content"
    ]["multipart/form-data"]["schema"]["properties"]
    assert list(props) == ["file", "note", "method"] and props["note"] == note
    required = upload_schema(note=note)["requestBody"]["content"]["multipart/form-data"]
    assert required["schema"]["required"] == ["file"]  # text fields stay optional


def test_upload_schema_is_valid_openapi_for_a_route() -> None:
    app = FastAPI()

    @app.post("/v1/predict", openapi_extra=upload_schema(note={"type": "string"}))
    async def predict(request: Request) -> dict:
        return {}

    spec = app.openapi()["paths"]["/v1/predict"]["post"]["requestBody"]
    props = spec["content"]["multipart/form-data"]["schema"]["properties"]
    assert set(props) == {"file", "note"}
