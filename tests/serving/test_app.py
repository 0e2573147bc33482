"""The REST API on real chest X-rays: predictions equal the bundle's own, explanations, limits,
hostile uploads, privacy of DICOM patient fields, the API key, micro-batching and the CLI."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import math
import os
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import SecondaryCaptureImageStorage, generate_uid

from medsight.bundle import Bundle, load_bundle
from medsight.data.io import load_image
from medsight.serving.app import create_app

MAX_UPLOAD = 300_000  # bytes: a real 224x224 X-ray JPEG or DICOM fits, the oversized case not
PATIENT = {"PatientName": "Doe^Jane", "PatientID": "MRN-4711-X", "PatientBirthDate": "19610203"}


@pytest.fixture(scope="module")
def xrays(chest_xray_dir: Path) -> list[Path]:
    """Real Kermany test X-rays, both classes."""
    files = [
        path
        for label in ("NORMAL", "PNEUMONIA")
        for path in sorted((chest_xray_dir / "test" / label).glob("*.jpeg"))[:6]
    ]
    if len(files) < 12:
        pytest.skip(f"too few X-rays under {chest_xray_dir / 'test'}")
    return files


@pytest.fixture(scope="module")
def bundle(xray_bundle: Path) -> Bundle:
    return load_bundle(xray_bundle)


@pytest.fixture(scope="module")
def client(xray_bundle: Path) -> Iterator[TestClient]:
    with TestClient(create_app(xray_bundle, max_upload_bytes=MAX_UPLOAD)) as test_client:
        yield test_client


def expected_probs(bundle: Bundle, path: Path) -> np.ndarray:
    """What the bundle itself says about the image decoded from disk (as in evaluate)."""
    pixels = np.array(load_image(path, bundle.spec.image_size, bundle.spec.channels))
    return bundle.predict_proba(pixels[None])[0]


def upload(data: bytes, name: str = "image.jpeg", mime: str = "image/jpeg") -> dict:
    return {"files": {"file": (name, data, mime)}}


def write_dicom(path: Path, xray: Path, preamble: bool = True, **attrs: str) -> Path:
    """A DICOM file holding a real X-ray's pixels (8-bit MONOCHROME2) and the given fields."""
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    pixels = np.asarray(Image.open(xray).convert("L"))
    ds.set_pixel_data(pixels, "MONOCHROME2", 8, generate_instance_uid=False)
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for name, value in attrs.items():
        setattr(ds, name, value)
    ds.save_as(path, implicit_vr=False, little_endian=True, enforce_file_format=preamble)
    return path


def assert_prediction(body: dict, probs: np.ndarray, threshold: float = 0.4) -> None:
    assert body["probabilities"]["NORMAL"] == pytest.approx(float(probs[0]), abs=1e-6)
    assert body["probabilities"]["PNEUMONIA"] == pytest.approx(float(probs[1]), abs=1e-6)
    assert body["positive_class"] == "PNEUMONIA"
    assert body["positive_probability"] == pytest.approx(float(probs[1]), abs=1e-6)
    assert body["threshold"] == threshold
    assert body["decision"] == ("PNEUMONIA" if probs[1] >= threshold else "NORMAL")


def test_predict_real_xray_equals_bundle(client: TestClient, bundle: Bundle, xrays: list[Path]):
    for path in (xrays[0], xrays[-1]):
        response = client.post("/v1/predict", **upload(path.read_bytes(), path.name))
        assert response.status_code == 200, response.text
        body = response.json()
        assert_prediction(body, expected_probs(bundle, path))
        assert body["calibrated"] is True and body["threshold_rule"] == "youden"
        assert body["model"]["name"] == "malaria_lenet" and body["model"]["recipe"] == "test"
        assert body["model"]["medsight_version"] and body["model"]["created"]
        assert body["model"]["engine"] == "pytorch"
        assert body["timing_ms"]["total"] >= body["timing_ms"]["model"] > 0
        assert "not for clinical use" in body["notice"]
        assert response.headers["cache-control"] == "no-store"
    # calibrated with the stored temperature (1.5), not the raw softmax
    pixels = np.array(load_image(xrays[0], (64, 64), 3))[None]
    raw = bundle.predict_proba(pixels, calibrated=False)[0]
    served = client.post("/v1/predict", **upload(xrays[0].read_bytes())).json()
    assert abs(served["positive_probability"] - raw[1]) > 1e-4


@pytest.mark.parametrize("preamble", [True, False], ids=["dicom-file", "dicom-no-preamble"])
def test_predict_dicom_never_echoes_or_logs_patient_fields(
    client: TestClient,
    bundle: Bundle,
    xrays: list[Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    preamble: bool,
):
    dicom = write_dicom(tmp_path / "Doe_Jane.dcm", xrays[1], preamble, **PATIENT)
    caplog.set_level(logging.DEBUG)
    response = client.post(
        "/v1/predict", **upload(dicom.read_bytes(), dicom.name, "application/dicom")
    )
    assert response.status_code == 200, response.text
    assert_prediction(response.json(), expected_probs(bundle, dicom))
    assert "POST /v1/predict 200" in caplog.text  # the request was logged, without the patient
    for secret in ("Doe", "Jane", "MRN-4711", "19610203"):
        assert secret not in response.text
        assert secret not in str(response.headers)
        assert secret not in caplog.text


def test_content_is_sniffed_not_the_name(client: TestClient, bundle: Bundle, xrays: list[Path]):
    response = client.post(
        "/v1/predict", **upload(xrays[2].read_bytes(), "scan.dcm", "application/dicom")
    )
    assert response.status_code == 200, response.text
    assert_prediction(response.json(), expected_probs(bundle, xrays[2]))


def test_predicts_with_a_current_onnx_export(
    xray_bundle: Path, bundle: Bundle, xrays: list[Path], tmp_path: Path
):
    from medsight.serving.export import export_onnx

    exported = shutil.copytree(xray_bundle, tmp_path / "exported")
    export_onnx(exported)
    for prefer_onnx, engine in ((True, "onnxruntime"), (False, "pytorch")):
        with TestClient(create_app(exported, prefer_onnx=prefer_onnx)) as test_client:
            body = test_client.post("/v1/predict", **upload(xrays[0].read_bytes())).json()
        assert body["model"]["engine"] == engine
        expected = expected_probs(bundle, xrays[0])
        assert body["positive_probability"] == pytest.approx(float(expected[1]), abs=1e-4)


def test_decision_follows_the_stored_threshold(
    xray_bundle: Path, bundle: Bundle, xrays: list[Path], tmp_path: Path
):
    p = float(expected_probs(bundle, xrays[3])[1])
    decisions = {}
    for threshold in (p - 0.01, p + 0.01):
        copy = shutil.copytree(xray_bundle, tmp_path / f"t{threshold:.4f}")
        spec = json.loads((copy / "bundle.json").read_text())
        (copy / "bundle.json").write_text(json.dumps({**spec, "threshold": threshold}))
        with TestClient(create_app(copy)) as test_client:
            body = test_client.post("/v1/predict", **upload(xrays[3].read_bytes())).json()
        assert body["threshold"] == pytest.approx(threshold)
        decisions[threshold] = body["decision"]
    assert list(decisions.values()) == ["PNEUMONIA", "NORMAL"]


def test_explain_returns_overlay_and_prediction(
    client: TestClient, bundle: Bundle, xrays: list[Path]
):
    response = client.post("/v1/explain", **upload(xrays[4].read_bytes()))
    assert response.status_code == 200, response.text
    body = response.json()
    assert_prediction(body["prediction"], expected_probs(bundle, xrays[4]))
    assert body["target_class"] == body["prediction"]["decision"]
    assert body["method"] == "gradcam" and body["layer"]
    assert math.isfinite(body["faithfulness"]) and -1 <= body["faithfulness"] <= 1
    for key in ("overlay_png_base64", "image_png_base64"):
        png = base64.b64decode(body[key])
        assert png.startswith(b"\x89PNG")
        assert Image.open(io.BytesIO(png)).size == (64, 64)
    assert Image.open(io.BytesIO(base64.b64decode(body["overlay_png_base64"]))).mode == "RGB"

    chosen = client.post(
        "/v1/explain",
        data={"method": "eigencam", "target": "NORMAL"},
        **upload(xrays[4].read_bytes()),
    )
    assert chosen.status_code == 200, chosen.text
    assert chosen.json()["target_class"] == "NORMAL" and chosen.json()["method"] == "eigencam"


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"method": "magic"}, "unknown method 'magic'"),
        ({"target": "FRACTURE"}, "'FRACTURE'"),
        ({"target": "\u00b9"}, "'\u00b9'"),  # a superscript one: isdigit() but no int
        ({"target": "7"}, "'7'"),  # an index past the classes
    ],
)
def test_explain_rejects_bad_fields(client: TestClient, xrays: list[Path], fields, fragment):
    response = client.post("/v1/explain", data=fields, **upload(xrays[0].read_bytes()))
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_field" and fragment in response.json()["detail"]


def test_model_health_and_schema(client: TestClient, xray_bundle: Path, tmp_path: Path):
    assert client.get("/healthz").json() == {"status": "ok"}
    model = client.get("/v1/model").json()
    assert model["class_names"] == ["NORMAL", "PNEUMONIA"] and model["positive_index"] == 1
    assert model["threshold"] == 0.4 and model["temperature"] == 1.5
    assert model["image_size"] == [64, 64] and model["model_card"] is None
    assert model["serving"]["max_upload_bytes"] == MAX_UPLOAD
    assert "gradcam" in model["serving"]["explain_methods"]
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    assert body["multipart/form-data"]["schema"]["required"] == ["file"]
    page = client.get("/")
    assert page.status_code == 200 and "Not for clinical use" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]

    with_card = shutil.copytree(xray_bundle, tmp_path / "carded")
    (with_card / "model_card.md").write_text("# Model card\n\nIntended use: research.\n")
    with TestClient(create_app(with_card)) as test_client:
        card = test_client.get("/v1/model").json()["model_card"]
    assert card == "# Model card\n\nIntended use: research.\n"


def png_claiming(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height 1-bit pixels, with almost no data: a
    decompression bomb that costs nothing to build."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _multipart(jpeg: bytes) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://x/", files={"file": ("a.jpeg", jpeg, "image/jpeg")})
    return request.read(), request.headers["content-type"]


def _chunked_oversized(jpeg: bytes) -> dict:
    """Oversized body sent in chunks without Content-Length: caught while reading."""
    body, content_type = _multipart(jpeg + b"\0" * MAX_UPLOAD)
    chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))
    return {"content": chunks, "headers": {"content-type": content_type}}


def _truncated_multipart(jpeg: bytes) -> dict:
    body, content_type = _multipart(jpeg)
    return {"content": body[: len(body) // 2], "headers": {"content-type": content_type}}


HOSTILE: list = [
    pytest.param(lambda j: upload(b""), 422, "unreadable_image", "empty", id="zero-bytes"),
    pytest.param(
        lambda j: upload(j[: len(j) // 2]),
        422,
        "unreadable_image",
        "truncated",
        id="truncated-jpeg",
    ),
    pytest.param(
        lambda j: upload(b"just some notes, not an image\n" * 20, "notes.png", "image/png"),
        422,
        "unreadable_image",
        "unrecognised content",
        id="text-named-png",
    ),
    pytest.param(
        lambda j: upload(png_claiming(30_000, 30_000), "bomb.png", "image/png"),
        422,
        "unreadable_image",
        "decompression-bomb",
        id="png-30000x30000",
    ),
    pytest.param(
        lambda j: upload(j + b"\0" * MAX_UPLOAD), 413, "upload_too_large", "exceeds", id="oversized"
    ),
    pytest.param(_chunked_oversized, 413, "upload_too_large", "exceeds", id="oversized-chunked"),
    pytest.param(
        lambda j: {"json": {"file": "xray.jpeg"}},
        415,
        "unsupported_media_type",
        "multipart/form-data",
        id="json-body",
    ),
    pytest.param(
        lambda j: {"data": {"file": "xray.jpeg"}},
        415,
        "unsupported_media_type",
        "application/x-www-form-urlencoded",
        id="urlencoded-body",
    ),
    pytest.param(
        lambda j: {"files": {"image": ("a.jpeg", j, "image/jpeg")}},
        422,
        "missing_file",
        "no 'file' field",
        id="missing-file-field",
    ),
    pytest.param(
        _truncated_multipart, 400, "malformed_multipart", "closing boundary", id="cut-form"
    ),
]


@pytest.mark.parametrize(("build", "status", "error", "fragment"), HOSTILE)
@pytest.mark.parametrize("route", ["/v1/predict", "/v1/explain"])
def test_hostile_upload_is_refused_and_server_stays_up(
    client: TestClient,
    xrays: list[Path],
    route: str,
    build: Callable[[bytes], dict],
    status: int,
    error: str,
    fragment: str,
):
    jpeg = xrays[5].read_bytes()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    response = client.post(route, **build(jpeg))
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert fragment in response.json()["detail"]
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert grown_mib < 200  # a 30,000 x 30,000 image would take 900 MB or more
    after = client.post(route, **upload(jpeg))
    assert after.status_code == 200, after.text


def test_unknown_route_and_method_use_the_error_shape(client: TestClient):
    assert client.get("/v2/predict").json()["error"] == "not_found"
    response = client.get("/v1/predict")
    assert response.status_code == 405 and response.json()["error"] == "method_not_allowed"


def test_api_key_required_accepted_rejected(xray_bundle: Path, xrays: list[Path]):
    jpeg = xrays[0].read_bytes()
    with TestClient(create_app(xray_bundle, api_key="s3cret-key")) as test_client:
        missing = test_client.post("/v1/predict", **upload(jpeg))
        assert missing.status_code == 401 and missing.json()["error"] == "missing_api_key"
        assert "X-API-Key" in missing.json()["detail"]
        wrong = test_client.post("/v1/predict", headers={"X-API-Key": "guess"}, **upload(jpeg))
        assert wrong.status_code == 403 and wrong.json()["error"] == "wrong_api_key"
        assert test_client.get("/v1/model").status_code == 401
        good = test_client.post("/v1/predict", headers={"X-API-Key": "s3cret-key"}, **upload(jpeg))
        assert good.status_code == 200
        assert test_client.get("/healthz").status_code == 200  # open for load balancers
        assert test_client.get("/").status_code == 200  # the page loads; its calls need the key
        assert (
            "s3cret-key"
            not in test_client.get("/v1/model", headers={"X-API-Key": "s3cret-key"}).text
        )


def test_concurrent_requests_are_batched_and_each_gets_its_own_result(
    xray_bundle: Path, bundle: Bundle, xrays: list[Path]
):
    app = create_app(xray_bundle, batch_window_ms=300, max_batch=8)  # wide: CI is noisy
    singles = [expected_probs(bundle, path) for path in xrays]

    async def fire() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as session:
            requests = [
                session.post("/v1/predict", **upload(path.read_bytes(), path.name))
                for path in xrays
            ]
            return await asyncio.gather(*requests)

    responses = asyncio.run(fire())
    assert all(r.status_code == 200 for r in responses)
    for response, probs in zip(responses, singles, strict=True):
        assert_prediction(response.json(), probs)
    sizes = [r.json()["batch_size"] for r in responses]
    assert max(sizes) > 1 and max(sizes) <= 8
    with TestClient(app) as test_client:
        stats = test_client.get("/v1/stats").json()
        lone = test_client.post("/v1/predict", **upload(xrays[0].read_bytes())).json()
    assert stats["images"] == len(xrays) and stats["model_calls"] < len(xrays)
    assert any(int(size) > 1 for size in stats["batch_sizes"])
    assert lone["batch_size"] == 1  # alone, it runs alone once the window has passed


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    ("stop", "exit_code"),
    [(signal.SIGINT, 0), (signal.SIGTERM, -signal.SIGTERM)],  # TERM: re-raised after shutdown
    ids=["ctrl-c", "sigterm"],
)
def test_cli_serve_answers_and_stops_cleanly(
    xray_bundle: Path, xrays: list[Path], stop: signal.Signals, exit_code: int
):
    port = free_port()
    env = {**os.environ, "MEDSIGHT_API_KEY": "env-key"}
    command = [sys.executable, "-m", "medsight", "serve", str(xray_bundle), "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, process.stdout.read().decode()
            try:
                if httpx.get(f"{base}/healthz", timeout=2).json() == {"status": "ok"}:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "medsight serve did not answer /healthz"
            time.sleep(0.3)
        assert httpx.get(f"{base}/v1/model").status_code == 401  # key from MEDSIGHT_API_KEY
        reply = httpx.post(
            f"{base}/v1/predict", headers={"X-API-Key": "env-key"}, **upload(xrays[0].read_bytes())
        )
        assert reply.status_code == 200 and reply.json()["decision"] in ("NORMAL", "PNEUMONIA")
    finally:
        process.send_signal(stop)
        output = process.communicate(timeout=30)[0].decode()
    assert process.returncode == exit_code, output
    assert "Application shutdown complete" in output and "Traceback" not in output


def test_an_image_unlike_the_training_images_is_flagged_in_the_answer(
    cell_bundle: Path, xrays: list[Path]
) -> None:
    with TestClient(create_app(cell_bundle)) as cells_client:
        answer = cells_client.post(
            "/v1/predict", files={"file": ("x.jpeg", xrays[0].read_bytes(), "image/jpeg")}
        ).json()
    assert answer["in_domain"] is False and answer["domain_score"] > 1
    assert "does not look like the images the model was trained on" in answer["domain_warning"]
    assert answer["decision"] in ("Parasitized", "Uninfected")  # the raw answer stays visible


def test_a_bundle_without_a_guard_says_it_cannot_tell(client: TestClient, xrays: list[Path]):
    answer = client.post(
        "/v1/predict", files={"file": ("x.jpeg", xrays[0].read_bytes(), "image/jpeg")}
    ).json()
    assert answer["in_domain"] is None and answer["domain_score"] is None
    assert "no domain check" in answer["domain_warning"]
