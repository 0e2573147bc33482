"""The Open Inference Protocol (KServe v2, Triton's HTTP/REST API) over the served bundle, so a
client written for Triton or KServe (``tritonclient.http``, KServe's ``InferenceRESTClient``)
works unchanged.

Routes: ``GET /v2/health/live`` and ``/v2/health/ready`` (open, like ``/healthz``); ``GET /v2``,
``GET /v2/models/<name>[/versions/1][/ready]`` and ``POST .../infer`` (behind the API key,
in the ``X-API-Key`` header, as ``/v1`` is). An inference request has exactly one input:

- ``pixels``, UINT8 ``[N, H, W, C]``: pixels already resized to the bundle's input size, what
  the Triton export (:mod:`.triton`) takes; JSON ``data`` or Triton's binary tensor extension;
- ``image``, BYTES ``[N]``: encoded image files (PNG, JPEG, DICOM...), decoded by ``/v1/predict``'s
  reader within its limits. Binary only (``set_data_from_numpy(..., binary_data=True)``): Triton
  sends each element as a 4-byte little-endian length and its bytes.

Outputs are the bundle's own answers, from the same batched model calls as ``/v1/predict``:
``probabilities`` FP32 ``[N, K]`` (calibrated, in class order; Triton's classification extension
gives ``"p:index:class"`` strings), ``decision`` BYTES ``[N]`` (the class decided at the bundle's
threshold) and ``domain_score`` FP32 ``[N]`` (above 1: unlike the training images, do not trust
the decision; NaN, ``null`` in JSON: the bundle has no domain check). Refusals are the
protocol's ``{"error": message}`` with a 4xx status.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.params import Depends
from fastapi.routing import APIRoute

from medsight import __version__
from medsight.bundle import BundleSpec
from medsight.serving.batching import MicroBatcher
from medsight.serving.classifier import Prediction
from medsight.serving.http import ApiError
from medsight.serving.logs import printable

__all__ = ["open_inference_router"]

log = logging.getLogger("medsight.serving")
HEADER_LENGTH = "Inference-Header-Content-Length"  # Triton's binary tensor data extension
PIXELS, IMAGE = "pixels", "image"
PROBS, DECISION, DOMAIN = "probabilities", "decision", "domain_score"
MAX_IMAGES = 256  # per request: one request may not occupy the model for minutes
VERSION = "1"


class Served(Protocol):
    """What the routes need of the app's service: the same batcher and decoding as ``/v1``."""

    spec: BundleSpec
    limits: dict[str, Any]
    batcher: MicroBatcher

    async def decode(self, data: bytes) -> np.ndarray: ...


class _V2Route(APIRoute):
    """Refusals in the protocol's shape, ``{"error": message}``, the API key's included."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except ApiError as exc:
                return _json({"error": exc.detail}, exc.status)
            except Exception:
                log.exception("%s %s failed", request.method, printable(request.url.path))
                return _json({"error": "the server failed on this request; see its log"}, 500)

        return run


def _json(content: dict[str, Any], status: int = 200, **headers: str) -> Response:
    body = json.dumps(content, allow_nan=False).encode()
    return Response(body, status, headers, media_type="application/json")


def _bad(detail: str, status: int = 400) -> ApiError:
    return ApiError(status, "invalid_inference_request", detail)


def _parameters(entry: dict[str, Any], what: str) -> dict[str, Any]:
    params = entry.get("parameters") or {}
    if not isinstance(params, dict):
        raise _bad(f"{what}: parameters must be a JSON object")
    return params


@dataclass(frozen=True)
class _Wanted:
    binary: bool
    classification: int = 0


@dataclass(frozen=True)
class _Inference:
    """A parsed request: the pixels, or the encoded images, and the outputs to send."""

    id: str | None
    pixels: np.ndarray | None
    images: list[bytes] | None
    outputs: dict[str, _Wanted]


def _metadata(name: str, spec: BundleSpec) -> dict[str, Any]:
    k = len(spec.class_names)
    return {
        "name": name,
        "versions": [VERSION],
        "platform": "medsight",
        "inputs": [
            {"name": PIXELS, "datatype": "UINT8", "shape": [-1, *spec.image_size, spec.channels]},
            {"name": IMAGE, "datatype": "BYTES", "shape": [-1]},
        ],
        "outputs": [
            {"name": PROBS, "datatype": "FP32", "shape": [-1, k]},
            {"name": DECISION, "datatype": "BYTES", "shape": [-1]},
            {"name": DOMAIN, "datatype": "FP32", "shape": [-1]},
        ],
    }


async def _read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused (413) past ``max_bytes`` before or while reading it."""
    encoding = request.headers.get("content-encoding", "identity").lower()
    if encoding != "identity":
        raise _bad(f"compressed requests ({encoding}) are not accepted; send them plain", 415)
    too_large = f"request body exceeds the limit of {max_bytes} bytes"
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _bad(too_large, 413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise _bad(too_large, 413)
    return bytes(body)


def _split(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    """The JSON header and the binary tensor data after it."""
    if header_length is None:
        header, binary = body, b""
    elif header_length.isdigit() and int(header_length) <= len(body):
        header, binary = body[: int(header_length)], body[int(header_length) :]
    else:
        raise _bad(f"{HEADER_LENGTH} {header_length!r} does not fit a {len(body)}-byte body")
    try:
        doc = json.loads(header)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(f"the inference request is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise _bad("the inference request is not a JSON object")
    return doc, binary


def _shape(tensor: dict[str, Any]) -> list[int]:
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise _bad(f"input {tensor.get('name')!r}: shape must be a list of sizes, not {shape!r}")
    if not shape or not 1 <= shape[0] <= MAX_IMAGES:
        raise _bad(f"input {tensor.get('name')!r}: send 1 to {MAX_IMAGES} images, not {shape}")
    return shape


def _pixels(shape: list[int], raw: bytes | None, data: Any, spec: BundleSpec) -> np.ndarray:
    want = [*spec.image_size, spec.channels]
    if shape[1:] != want:
        size = "x".join(map(str, spec.image_size))
        raise _bad(
            f"input 'pixels' has shape {shape}; this model takes [N, {', '.join(map(str, want))}]"
            f" uint8 pixels already resized to {size} (or send encoded files as 'image')"
        )
    count = math.prod(shape)
    if raw is not None:
        if len(raw) != count:
            raise _bad(f"input 'pixels': {len(raw)} bytes of binary data for {count} pixels")
        return np.frombuffer(raw, np.uint8).reshape(shape).copy()
    try:
        values = np.asarray(data)
    except ValueError as exc:  # ragged nested lists
        raise _bad(f"input 'pixels': data is not a regular array: {exc}") from exc
    if values.dtype.kind not in "iu" or values.size != count:
        raise _bad(f"input 'pixels': data must be {count} integers 0-255 (flat or nested)")
    if values.size and (values.min() < 0 or values.max() > 255):
        raise _bad("input 'pixels': UINT8 data must lie in 0-255")
    return values.astype(np.uint8).reshape(shape)


def _images(shape: list[int], raw: bytes | None) -> list[bytes]:
    """Triton's serialised BYTES tensor: per element a little-endian uint32 length, its bytes."""
    if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
        raise _bad(f"input 'image' has shape {shape}; send [N] (or [N, 1]) encoded images")
    if raw is None:
        raise _bad(
            "input 'image': encoded images are binary, not JSON text: send them with Triton's "
            "binary data extension (tritonclient: set_data_from_numpy(..., binary_data=True))"
        )
    items, at = [], 0
    for _ in range(shape[0]):
        if at + 4 > len(raw):
            break
        (length,) = struct.unpack_from("<I", raw, at)
        items.append(raw[at + 4 : at + 4 + length])
        at += 4 + length
    if len(items) != shape[0] or at != len(raw):
        raise _bad(f"input 'image': the binary data is not {shape[0]} length-prefixed images")
    return items


def _outputs(doc: dict[str, Any], classes: int) -> dict[str, _Wanted]:
    binary = _parameters(doc, "the request").get("binary_data_output") is True
    requested = doc.get("outputs")
    if requested is None:
        return {name: _Wanted(binary) for name in (PROBS, DECISION, DOMAIN)}
    if not isinstance(requested, list) or not all(isinstance(o, dict) for o in requested):
        raise _bad("outputs must be a list of objects with a name")
    wanted = {}
    for output in requested:
        name = output.get("name")
        options = _parameters(output, f"output {name!r}")
        if name not in (PROBS, DECISION, DOMAIN):
            raise _bad(f"unknown output {name!r}: this model gives {PROBS}, {DECISION}, {DOMAIN}")
        top = options.get("classification", 0)
        if not isinstance(top, int) or isinstance(top, bool) or top < 0:
            raise _bad(f"output {name!r}: classification must be a count, not {top!r}")
        if top and name != PROBS:
            raise _bad(f"output {name!r}: classification applies to {PROBS!r} only")
        wanted[name] = _Wanted(options.get("binary_data", binary) is True, min(top, classes))
    return wanted


def _parse(body: bytes, header_length: str | None, spec: BundleSpec) -> _Inference:
    doc, binary = _split(body, header_length)
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise _bad(f"send exactly one input: {PIXELS!r} (UINT8) or {IMAGE!r} (BYTES)")
    tensor = inputs[0]
    name, datatype = tensor.get("name"), tensor.get("datatype")
    expected = {PIXELS: "UINT8", IMAGE: "BYTES"}
    if name not in expected:
        raise _bad(f"unknown input {name!r}: this model takes {PIXELS!r} or {IMAGE!r}")
    if datatype != expected[name]:
        raise _bad(f"input {name!r} is {expected[name]}, not {datatype!r}")
    shape = _shape(tensor)
    size = _parameters(tensor, f"input {name!r}").get("binary_data_size")
    if size is not None and size != len(binary):
        raise _bad(f"input {name!r}: binary_data_size {size!r}, but {len(binary)} bytes follow")
    if size is None and binary:
        raise _bad("binary data follows the JSON, but no input has a binary_data_size")
    raw = binary if size is not None else None
    pixels = _pixels(shape, raw, tensor.get("data"), spec) if name == PIXELS else None
    images = _images(shape, raw) if name == IMAGE else None
    request_id = doc.get("id")
    return _Inference(
        request_id if isinstance(request_id, str) else None,
        pixels,
        images,
        _outputs(doc, len(spec.class_names)),
    )


def _tensor(name: str, values: np.ndarray, wanted: _Wanted) -> tuple[dict[str, Any], bytes]:
    """One output, as JSON data or as binary data after the header."""
    text = values.dtype.kind == "O"
    entry: dict[str, Any] = {
        "name": name,
        "datatype": "BYTES" if text else "FP32",
        "shape": list(values.shape),
    }
    if not wanted.binary:
        flat = values.ravel().tolist()
        entry["data"] = flat if text else [None if math.isnan(v) else v for v in flat]
        return entry, b""
    if text:
        raw = b"".join(struct.pack("<I", len(s.encode())) + s.encode() for s in values.ravel())
    else:
        raw = values.astype("<f4").tobytes()
    entry["parameters"] = {"binary_data_size": len(raw)}
    return entry, raw


def _answer(name: str, spec: BundleSpec, query: _Inference, answers: list[Prediction]) -> Response:
    """The inference response; binary outputs follow its JSON header."""
    probs = np.array([[a.probabilities[c] for c in spec.class_names] for a in answers], "f4")
    scores = np.array([np.nan if a.domain_score is None else a.domain_score for a in answers])
    values = {
        PROBS: probs,
        DECISION: np.array([a.decision for a in answers], dtype=object),
        DOMAIN: scores.astype("f4"),
    }
    outputs, binary = [], []
    for output, wanted in query.outputs.items():
        value = values[output]
        if wanted.classification:  # Triton's classification extension: "p:index:class"
            order = np.argsort(-probs, axis=1, kind="stable")[:, : wanted.classification]
            value = np.array(
                [
                    [f"{row[i]:f}:{i}:{spec.class_names[i]}" for i in top]
                    for row, top in zip(probs, order, strict=True)
                ],
                dtype=object,
            )
        entry, raw = _tensor(output, value, wanted)
        outputs.append(entry)
        binary.append(raw)
    doc = {"model_name": name, "model_version": VERSION, "outputs": outputs}
    if query.id is not None:
        doc["id"] = query.id
    header = json.dumps(doc, allow_nan=False).encode()
    if not any(binary):
        return _json(doc, **{"Cache-Control": "no-store"})
    headers = {HEADER_LENGTH: str(len(header)), "Cache-Control": "no-store"}
    return Response(header + b"".join(binary), 200, headers, "application/octet-stream")


def open_inference_router(service: Served, name: str, guard: list[Depends]) -> APIRouter:
    """The ``/v2`` routes for ``service`` (the app's predictor, batcher and limits), serving
    it as model ``name``; ``guard``: the API-key dependency of the ``/v1`` routes, if any."""
    spec = service.spec
    router = APIRouter(route_class=_V2Route, tags=["Open Inference Protocol (KServe v2)"])

    def check(model: str, version: str | None) -> None:
        if model != name:
            raise ApiError(404, "unknown_model", f"unknown model {model!r}; this serves {name!r}")
        if version not in (None, VERSION):
            raise ApiError(404, "unknown_version", f"model {name!r} has version {VERSION} only")

    @router.get("/v2/health/live", summary="Liveness (no API key needed)")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @router.get("/v2/health/ready", summary="Readiness (no API key needed)")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    @router.get("/v2", dependencies=guard, summary="Server metadata")
    async def server() -> dict[str, Any]:
        extensions = ["binary_tensor_data", "classification"]
        return {"name": "medsight", "version": __version__, "extensions": extensions}

    async def metadata(model: str, version: str | None = None) -> dict[str, Any]:
        check(model, version)
        return _metadata(name, spec)

    async def model_ready(model: str, version: str | None = None) -> dict[str, Any]:
        check(model, version)
        return {"name": name, "ready": True}

    async def infer(request: Request, model: str, version: str | None = None) -> Response:
        check(model, version)
        body = await _read_body(request, service.limits["max_upload_bytes"])
        query = _parse(body, request.headers.get(HEADER_LENGTH), spec)
        pixels = query.pixels if query.images is None else await _decode(service, query.images)
        rows = await asyncio.gather(*(service.batcher.submit(p) for p in pixels))
        answers = [Prediction.of(spec, row[:-1], float(row[-1])) for row, _ in rows]
        return _answer(name, spec, query, answers)

    for base in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        router.add_api_route(base, metadata, dependencies=guard, summary="Model metadata")
        router.add_api_route(f"{base}/ready", model_ready, dependencies=guard, summary="Ready")
        router.add_api_route(
            f"{base}/infer", infer, methods=["POST"], dependencies=guard, summary="Classify"
        )
    return router


async def _decode(service: Served, images: list[bytes]) -> np.ndarray:
    """The encoded images decoded as ``/v1/predict`` decodes an upload; the first one that
    cannot be is named by its place in the tensor."""
    decoded = await asyncio.gather(*(service.decode(i) for i in images), return_exceptions=True)
    for index, result in enumerate(decoded):
        if isinstance(result, ApiError):
            where = f"image {index + 1} of {len(images)}: " if len(images) > 1 else ""
            raise ApiError(result.status, result.error, where + result.detail)
        if isinstance(result, BaseException):
            raise result
    return np.stack(decoded)
