"""``medsight serve``: a REST API and an offline web page over one model bundle.

Uploads are decoded in memory (never written to disk or logged) with the same reader and resize
rule as training; concurrent predictions are micro-batched (:mod:`.batching`); every refusal is
``{"error": code, "detail": message}`` with a 4xx status, and the server stays up after it.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import math
import os
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image

from medsight import __version__
from medsight.bundle import Predictor, bundle_folder, load_predictor
from medsight.data.io import read_image_bytes, to_pixels
from medsight.data.limits import DEFAULT_MAX_DECODED_BYTES, DEFAULT_MAX_PIXELS
from medsight.errors import MedsightError, UnreadableImageError
from medsight.explanation.methods import METHOD_NAMES
from medsight.serving.batching import MicroBatcher
from medsight.serving.classifier import Prediction
from medsight.serving.http import ApiError, HeadersAndLog, api_key_check, install_error_handlers
from medsight.serving.open_inference import open_inference_router
from medsight.serving.triton import model_name
from medsight.serving.uploads import read_form, upload_schema

STATIC = Path(__file__).parent / "static"
DEFAULT_MAX_UPLOAD_BYTES = 50 * 1024 * 1024
NOTICE = "Research software: not for clinical use."
T = TypeVar("T")

if TYPE_CHECKING:
    from medsight.bundle import Bundle


class _Service:
    """The state behind the routes: predictor, limits, thread pools, batcher, explainer."""

    def __init__(self, predictor: Predictor, folder: Path, limits: dict):
        self.folder, self.spec, self.limits = folder, predictor.spec, limits
        # the REST API has always said "pytorch" where batch prediction says "torch"
        self.engine = {"torch": "pytorch"}.get(predictor.engine, predictor.engine)
        card = folder / "model_card.md"
        self.card = card.read_text(encoding="utf-8") if card.is_file() else None
        # one thread per image decoded at once: the bound on decoding's memory, not only CPU
        self.decode_pool = ThreadPoolExecutor(limits["max_decodes"], "medsight-decode")
        self.model_pool = ThreadPoolExecutor(1, "medsight-model")
        # explanations hook into a model and toggle its gradients: they get their own thread, a
        # model no prediction uses (a copy when predictions run on the PyTorch one; loaded in
        # that thread by the first explanation when they run on ONNX Runtime, so a server that
        # is never asked for one never imports PyTorch) and a bound on how many may wait, so
        # that a queue of them never delays a prediction
        self.explain_pool = ThreadPoolExecutor(1, "medsight-explain")
        self.explainer: Bundle | None = (
            copy.deepcopy(predictor) if predictor.engine == "torch" else None
        )
        self.explain_slots = asyncio.Semaphore(limits["max_explanations"])
        self.batcher = MicroBatcher(
            _answer_rows(predictor), self.model_pool, limits["max_batch"], limits["batch_window_ms"]
        )

    def model_card(self) -> dict[str, Any]:
        spec = self.spec
        serving = {**self.limits, "engine": self.engine, "explain_methods": list(METHOD_NAMES)}
        return {
            **spec.model_dump(mode="json"),
            "positive_index": spec.positive_index,
            "model_card": self.card,
            "serving": serving,
            "notice": NOTICE,
        }

    async def predict(self, request: Request) -> dict[str, Any]:
        start = time.perf_counter()
        form = await read_form(request, self.limits["max_upload_bytes"])
        return (await self._classify(form.file(), start))[1]

    async def explain(self, request: Request) -> dict[str, Any]:
        start = time.perf_counter()
        form = await read_form(request, self.limits["max_upload_bytes"])
        method = form.text("method") or "gradcam"
        if method not in METHOD_NAMES:
            detail = f"unknown method {method!r}; choose one of {', '.join(METHOD_NAMES)}"
            raise ApiError(422, "invalid_field", detail)
        target = self._target(form.text("target"))
        if self.explain_slots.locked():
            detail = (
                f"{self.limits['max_explanations']} explanations are in progress; retry shortly"
            )
            raise ApiError(503, "busy", detail)
        async with self.explain_slots:
            return await self._explain(form.file(), method, target, start)

    async def _explain(
        self, data: bytes, method: str, target: str | int | None, start: float
    ) -> dict[str, Any]:
        pixels, prediction = await self._classify(data, start)
        target = prediction["decision"] if target is None else target
        begin = time.perf_counter()

        def run() -> tuple[Any, str, str]:
            from medsight.explanation.cam import explain

            found = explain(self._explainer(), pixels, target, method)
            return found, _png_base64(found.overlay), _png_base64(pixels)

        try:
            found, overlay, image = await _in(self.explain_pool, run)
        except MedsightError as exc:
            raise ApiError(422, "explain_failed", str(exc)) from exc
        timing = {**prediction.pop("timing_ms"), "explain": _ms(begin), "total": _ms(start)}
        faithfulness = found.faithfulness if math.isfinite(found.faithfulness) else None
        return {
            "prediction": prediction,
            "target_class": found.target_class,
            "target_index": found.target_index,
            "method": found.method,
            "layer": found.layer,
            "faithfulness": faithfulness,
            "overlay_png_base64": overlay,
            "image_png_base64": image,
            "width": int(pixels.shape[1]),
            "height": int(pixels.shape[0]),
            "timing_ms": timing,
        }

    def _explainer(self) -> Bundle:
        """The PyTorch bundle explanations run on (called in the one explain thread)."""
        if self.explainer is None:
            from medsight.bundle import load_bundle

            self.explainer = load_bundle(self.folder)
        return self.explainer

    def _target(self, value: str | None) -> str | int | None:
        names = self.spec.class_names
        if value is None or value in names:
            return value
        if value.isascii() and value.isdigit() and int(value) < len(names):  # not "¹"
            return int(value)
        raise ApiError(422, "invalid_field", f"target {value!r} is not one of {names}")

    async def decode(self, data: bytes) -> np.ndarray:
        """An upload's pixels as the model takes them, within the decode limits (422 if not)."""
        spec = self.spec

        def decode() -> np.ndarray:
            img = read_image_bytes(
                data,
                "upload",
                self.limits["max_pixels"],
                draft_size=spec.image_size,
                max_bytes=self.limits["max_decoded_bytes"],
            )
            return np.array(to_pixels(img, spec.image_size, spec.channels))  # writable: torch

        try:
            return await _in(self.decode_pool, decode)
        except UnreadableImageError as exc:  # the reason only: never the client's file name
            raise ApiError(
                422, "unreadable_image", f"cannot decode the upload: {exc.reason}"
            ) from exc

    async def _classify(self, data: bytes, start: float) -> tuple[np.ndarray, dict[str, Any]]:
        """Decode the upload, run it through the batcher, shape the prediction JSON."""
        spec = self.spec
        pixels = await self.decode(data)
        decoded = time.perf_counter()
        row, batch_size = await self.batcher.submit(pixels)
        prediction = Prediction.of(spec, row[:-1], float(row[-1]))
        return pixels, {
            **prediction.to_dict(),
            "calibrated": True,
            "model": {
                "name": spec.model_name,
                "recipe": spec.recipe,
                "medsight_version": spec.medsight_version,
                "created": spec.created,
                "engine": self.engine,
            },
            "batch_size": batch_size,
            "timing_ms": {
                "receive_and_decode": _ms(start, decoded),
                "model": _ms(decoded),
                "total": _ms(start),
            },
            "notice": NOTICE,
        }


def create_app(
    bundle_path: str | Path,
    api_key: str | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
    max_explanations: int = 4,
    max_decodes: int | None = None,
    batch_window_ms: float = 2.0,
    max_batch: int = 16,
    prefer_onnx: bool = True,
    precision: str | None = None,
    name: str | None = None,
) -> FastAPI:
    """The FastAPI application serving ``bundle_path`` (a bundle or the run holding one).

    ``api_key``: when given, every ``/v1`` route, and ``/v2`` (:mod:`.open_inference`) but its
    health checks, needs it in the ``X-API-Key`` header (``/``, ``/healthz`` and
    ``/openapi.json`` stay open). ``prefer_onnx``: predict with the bundle's
    ``model.onnx`` (ONNX Runtime, faster) when it is a current export, its adopted int8 model
    unless ``precision="fp32"``; explanations always use the PyTorch model (loaded by the first
    one when predictions run on ONNX Runtime: PyTorch is not imported before). ``max_pixels`` and
    ``max_decoded_bytes``: the decoded-size limits each
    upload's header is checked against before its pixels are decoded (``medsight.data.limits``).
    ``max_explanations``: explanations in progress at once; one more is a 503 ``busy``.
    ``max_decodes``: uploads decoded at once (default: the CPU count, at most 4), so decoding
    never holds more than ``max_decodes x max_decoded_bytes`` of pixels; the others wait.
    ``name``: the model's name under ``/v2/models/`` (default: the run's or bundle's folder).
    """
    max_decodes = max_decodes or min(4, os.cpu_count() or 1)
    if max_decodes < 1:
        raise ValueError(f"max_decodes must be at least 1, not {max_decodes}")
    folder = bundle_folder(bundle_path)
    predictor = load_predictor(folder, prefer_onnx, precision)
    limits = {
        "max_upload_bytes": max_upload_bytes,
        "max_pixels": max_pixels,
        "max_decoded_bytes": max_decoded_bytes,
        "max_explanations": max_explanations,
        "max_decodes": max_decodes,
        "max_batch": max_batch,
        "batch_window_ms": batch_window_ms,
        "api_key_required": bool(api_key),
    }
    service = _Service(predictor, folder, limits)
    page = (STATIC / "index.html").read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await service.batcher.close()

    app = FastAPI(
        title="medsight",
        version=__version__,
        description=f"{NOTICE} Offline, read the schema at /openapi.json: /docs loads Swagger "
        "UI from a CDN and needs internet.",
        lifespan=lifespan,
    )
    app.state.service = service
    install_error_handlers(app)
    app.add_middleware(HeadersAndLog)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    guard = [Depends(api_key_check(api_key))] if api_key else []

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/healthz", summary="Liveness check (no API key needed)")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/model", dependencies=guard, summary="Bundle description and model card")
    async def model() -> dict[str, Any]:
        return service.model_card()

    @app.get("/v1/stats", dependencies=guard, summary="Engine, model calls, batch sizes, times")
    async def stats() -> dict[str, Any]:
        return {"engine": service.engine, **service.batcher.stats()}

    upload = upload_schema()

    @app.post("/v1/predict", dependencies=guard, openapi_extra=upload, summary="Classify one image")
    async def predict(request: Request) -> dict[str, Any]:
        return await service.predict(request)

    upload = upload_schema(
        method={"type": "string", "enum": list(METHOD_NAMES), "default": "gradcam"},
        target={"type": "string", "description": "class to explain (default: the decision)"},
    )

    @app.post("/v1/explain", dependencies=guard, openapi_extra=upload, summary="Heat-map + class")
    async def explain_route(request: Request) -> dict[str, Any]:
        return await service.explain(request)

    # the Open Inference Protocol (KServe v2 / Triton HTTP) over the same service
    app.include_router(open_inference_router(service, model_name(folder, name), guard))
    return app


async def _in(pool: ThreadPoolExecutor, fn: Callable[[], T]) -> T:
    return await asyncio.get_running_loop().run_in_executor(pool, fn)


def _answer_rows(predictor: Predictor) -> Callable[[np.ndarray], np.ndarray]:
    """Batched pixels -> one row per image: its probabilities, then its domain score."""

    def run(pixels: np.ndarray) -> np.ndarray:
        answers = predictor.answer(pixels)
        return np.column_stack([answers.probs, answers.domain_score])

    return run


def _ms(start: float, end: float | None = None) -> float:
    return round(((time.perf_counter() if end is None else end) - start) * 1000, 2)


def _png_base64(pixels: np.ndarray) -> str:
    buffer = BytesIO()
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
