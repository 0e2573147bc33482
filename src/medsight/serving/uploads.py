"""Multipart uploads for the REST API, read in memory only and within a size limit.

Starlette's own form parser spools files over 1 MB to a temporary file; medical images must
never touch the disk, so the body is parsed here with python-multipart's streaming parser. The
size limit is checked against ``Content-Length`` before reading and again while reading (a
client may send no length, or lie).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from medsight.serving.http import ApiError

CURL_HINT = "e.g. curl -F file=@xray.jpeg http://HOST:PORT/v1/predict"


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)
    name: str = ""


class Form:
    """The parts of a multipart/form-data body by field name (first one wins)."""

    def __init__(self, parts: dict[str, bytes]):
        self.parts = parts

    def file(self, name: str = "file") -> bytes:
        if name not in self.parts:
            detail = f"no {name!r} field in the form: upload the image as that field ({CURL_HINT})"
            raise ApiError(422, "missing_file", detail)
        return self.parts[name]

    def text(self, name: str, max_chars: int = 200) -> str | None:
        """A short text field, or None when absent or empty."""
        if name not in self.parts:
            return None
        try:
            value = self.parts[name].decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise ApiError(422, "invalid_field", f"field {name!r} is not UTF-8 text") from exc
        if len(value) > max_chars:
            raise ApiError(422, "invalid_field", f"field {name!r} is longer than {max_chars}")
        return value or None


class _Collector:
    """python-multipart callbacks that keep every part's bytes in memory."""

    def __init__(self, max_parts: int):
        self.max_parts, self.parts, self.done = max_parts, [], False
        self._field, self._value = b"", b""

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._begin,
            "on_part_data": lambda data, start, end: self.parts[-1].data.extend(data[start:end]),
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_end": self._end,
        }

    def _begin(self) -> None:
        if len(self.parts) >= self.max_parts:
            raise ApiError(400, "malformed_multipart", f"more than {self.max_parts} form fields")
        self.parts.append(_Part())

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self.parts[-1].headers[self._field.lower()] = self._value
        self._field, self._value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self.parts[-1].headers.get(b"content-disposition"))
        if b"name" not in options:
            detail = "a form part has no Content-Disposition name"
            raise ApiError(400, "malformed_multipart", detail)
        self.parts[-1].name = options[b"name"].decode("utf-8", "replace")

    def _end(self) -> None:
        self.done = True


async def read_form(request: Request, max_bytes: int, max_parts: int = 8) -> Form:
    """Parse a multipart/form-data request body of at most ``max_bytes`` bytes, in memory."""
    content_type, params = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data":
        got = content_type.decode("latin-1") or "no Content-Type"
        detail = (
            f"send the image as multipart/form-data with a 'file' field, not {got} ({CURL_HINT})"
        )
        raise ApiError(415, "unsupported_media_type", detail)
    if not params.get(b"boundary"):
        raise ApiError(400, "malformed_multipart", "multipart/form-data without a boundary")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(declared, max_bytes)  # refused before reading any of it
    collector = _Collector(max_parts)
    received = 0
    try:
        parser = MultipartParser(params[b"boundary"], collector.callbacks())
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_bytes:
                raise _too_large(f"more than {received}", max_bytes)
            parser.write(chunk)
    except FormParserError as exc:
        raise ApiError(400, "malformed_multipart", f"invalid multipart body: {exc}") from exc
    except ClientDisconnect as exc:
        raise ApiError(400, "client_disconnected", "the client closed the upload") from exc
    if not collector.done:
        detail = "the multipart body ends before its closing boundary (truncated upload?)"
        raise ApiError(400, "malformed_multipart", detail)
    parts: dict[str, bytes] = {}
    for part in collector.parts:
        parts.setdefault(part.name, bytes(part.data))
    return Form(parts)


def _too_large(size: str, max_bytes: int) -> ApiError:
    detail = f"request body of {size} bytes exceeds the limit of {max_bytes} bytes"
    return ApiError(413, "upload_too_large", detail)


def upload_schema(**fields: dict[str, Any]) -> dict[str, Any]:
    """The multipart body for the OpenAPI schema of a route that reads it with
    :func:`read_form` (FastAPI cannot see it): the ``file`` plus optional text ``fields``."""
    file = {"type": "string", "format": "binary", "description": "PNG, JPEG or DICOM image"}
    schema = {"type": "object", "required": ["file"], "properties": {"file": file, **fields}}
    content = {"multipart/form-data": {"schema": schema}}
    return {"requestBody": {"required": True, "content": content}}
