"""The Open Inference Protocol (/v2) of ``medsight serve``, spoken to by Triton's own client
(``tritonclient.http``) against a real uvicorn server: health, metadata, inference on a uint8
tensor and on encoded images equal to the bundle's own answers, the API key, and refusals in
the protocol's ``{"error": ...}`` shape."""

from __future__ import annotations

import json
import struct
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn

from medsight.bundle import load_bundle
from medsight.data.io import load_image
from medsight.serving.app import create_app

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

KEY = "open-inference-test-key"
MAX_UPLOAD = 1_000_000
CLASSES = ["NORMAL", "PNEUMONIA"]


@pytest.fixture(scope="module")
def base_url(xray_bundle: Path):
    """``medsight serve``'s app for the test bundle (API key on, 1 MB uploads) on a free port."""
    app = create_app(xray_bundle, api_key=KEY, prefer_onnx=False, max_upload_bytes=MAX_UPLOAD)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.02)
    yield f"127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def client(base_url: str):
    triton = httpclient.InferenceServerClient(base_url)
    yield triton
    triton.close()


@pytest.fixture(scope="module")
def xrays(chest_xray_dir: Path) -> list[Path]:
    """4 real Kermany test images, 2 per class."""
    test = chest_xray_dir / "test"
    return [p for c in CLASSES for p in sorted((test / c).glob("*.jpeg"))[:2]]


def _auth() -> dict[str, str]:
    """A fresh header dict per call: tritonclient adds its own headers to the one it is given."""
    return {"X-API-Key": KEY}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _pixels_input(pixels: np.ndarray, binary: bool = True):
    tensor = httpclient.InferInput("pixels", list(pixels.shape), "UINT8")
    tensor.set_data_from_numpy(pixels, binary_data=binary)
    return tensor


def _outputs(binary: bool = True) -> list:
    names = ("probabilities", "decision", "domain_score")
    return [httpclient.InferRequestedOutput(n, binary_data=binary) for n in names]


def test_health_and_metadata(client) -> None:
    assert client.is_server_live() and client.is_server_ready()  # open, like /healthz
    assert client.is_model_ready("xray", headers=_auth())
    assert "binary_tensor_data" in client.get_server_metadata(headers=_auth())["extensions"]
    for version in ("", "1"):
        meta = client.get_model_metadata("xray", version, headers=_auth())
        assert meta["name"] == "xray" and meta["versions"] == ["1"]
        inputs = {i["name"]: (i["datatype"], i["shape"]) for i in meta["inputs"]}
        assert inputs == {"pixels": ("UINT8", [-1, 64, 64, 3]), "image": ("BYTES", [-1])}
        outputs = {o["name"]: (o["datatype"], o["shape"]) for o in meta["outputs"]}
        assert outputs == {
            "probabilities": ("FP32", [-1, 2]),
            "decision": ("BYTES", [-1]),
            "domain_score": ("FP32", [-1]),
        }


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_on_a_uint8_tensor_is_the_bundles_answer(
    client, base_url: str, xray_bundle: Path, xrays: list[Path], binary: bool
) -> None:
    bundle = load_bundle(xray_bundle)
    pixels = np.stack([load_image(p, (64, 64), 3) for p in xrays])
    before = httpx.get(f"http://{base_url}/v1/stats", headers=_auth()).json()["images"]
    result = client.infer(
        "xray", [_pixels_input(pixels, binary)], outputs=_outputs(binary), headers=_auth()
    )
    expected = bundle.predict_proba(pixels)  # calibrated: temperature 1.5
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=1e-5)
    decided = [CLASSES[i] for i in bundle.spec.decide(expected)]  # threshold 0.4
    # BYTES come back as bytes from binary data, as str from JSON (tritonclient's choice)
    assert [_text(d) for d in result.as_numpy("decision")] == decided
    assert np.isnan(result.as_numpy("domain_score")).all()  # this bundle has no domain check
    # the same batched model calls as /v1/predict: the batcher counted these images
    after = httpx.get(f"http://{base_url}/v1/stats", headers=_auth()).json()["images"]
    assert after - before == len(xrays)


def test_classification_extension_names_the_classes(client, xray_bundle: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    top = httpclient.InferRequestedOutput("probabilities", class_count=2)
    result = client.infer("xray", [_pixels_input(pixels)], outputs=[top], headers=_auth())
    probs = load_bundle(xray_bundle).predict_proba(pixels)
    for row, ranked in zip(probs, result.as_numpy("probabilities"), strict=True):
        parsed = [entry.decode().split(":") for entry in ranked]
        assert [int(i) for _, i, _ in parsed] == list(np.argsort(-row))
        assert [name for _, _, name in parsed] == [CLASSES[i] for i in np.argsort(-row)]
        np.testing.assert_allclose([float(p) for p, _, _ in parsed], np.sort(row)[::-1], atol=1e-5)


def test_infer_on_encoded_images_equals_v1_predict(
    client, base_url: str, xrays: list[Path]
) -> None:
    files = [p.read_bytes() for p in xrays]
    tensor = httpclient.InferInput("image", [len(files)], "BYTES")
    tensor.set_data_from_numpy(np.array(files, dtype=np.object_))
    result = client.infer("xray", [tensor], headers=_auth())  # no outputs named: all, binary
    for data, probs, decision in zip(
        files, result.as_numpy("probabilities"), result.as_numpy("decision"), strict=True
    ):
        v1 = httpx.post(
            f"http://{base_url}/v1/predict", headers=_auth(), files={"file": ("x.jpeg", data)}
        ).json()
        np.testing.assert_allclose(probs, [v1["probabilities"][c] for c in CLASSES], atol=1e-6)
        assert decision.decode() == v1["decision"]


def test_the_api_key_guards_the_model_routes(client) -> None:
    pixels = np.zeros((1, 64, 64, 3), np.uint8)
    for headers, status, says in [
        (None, "401", "X-API-Key header"),
        ({"X-API-Key": "wrong"}, "403", "wrong API key"),
    ]:
        for call in (
            lambda h: client.infer("xray", [_pixels_input(pixels)], headers=h),
            lambda h: client.get_model_metadata("xray", headers=h),
        ):
            with pytest.raises(InferenceServerException) as caught:
                call(headers)
            assert caught.value.status() == status and says in caught.value.message()


def _header(inputs: list[dict], outputs: list[dict] | None = None) -> dict:
    doc: dict = {"inputs": inputs}
    if outputs is not None:
        doc["outputs"] = outputs
    return doc


PIXELS_1 = {"name": "pixels", "datatype": "UINT8", "shape": [1, 64, 64, 3]}
JUNK = struct.pack("<I", 9) + b"not image"
REFUSALS = [  # (case, JSON header, binary data after it, extra headers, status, message part)
    ("not json", b"{nope", b"", {}, 400, "not JSON"),
    ("no inputs", _header([]), b"", {}, 400, "exactly one input"),
    ("two inputs", _header([PIXELS_1, PIXELS_1]), b"", {}, 400, "exactly one input"),
    ("unknown input", _header([{**PIXELS_1, "name": "x"}]), b"", {}, 400, "unknown input 'x'"),
    (
        "bad parameters",
        _header([{**PIXELS_1, "parameters": "binary"}]),
        b"",
        {},
        400,
        "input 'pixels': parameters must be a JSON object",
    ),
    ("wrong type", _header([{**PIXELS_1, "datatype": "FP32"}]), b"", {}, 400, "is UINT8"),
    (
        "wrong size",
        _header([{**PIXELS_1, "shape": [1, 32, 32, 3], "data": [0] * 3072}]),
        b"",
        {},
        400,
        "takes [N, 64, 64, 3] uint8 pixels already resized to 64x64",
    ),
    ("no images", _header([{**PIXELS_1, "shape": [0, 64, 64, 3]}]), b"", {}, 400, "1 to 256"),
    (
        "out of range",
        _header([{**PIXELS_1, "data": [300] * 12288}]),
        b"",
        {},
        400,
        "0-255",
    ),
    ("floats", _header([{**PIXELS_1, "data": [0.5] * 12288}]), b"", {}, 400, "integers 0-255"),
    (
        "short binary",
        _header([{**PIXELS_1, "parameters": {"binary_data_size": 10}}]),
        b"0123456789",
        {},
        400,
        "10 bytes of binary data for 12288 pixels",
    ),
    (
        "size mismatch",
        _header([{**PIXELS_1, "parameters": {"binary_data_size": 5}}]),
        b"0123",
        {},
        400,
        "binary_data_size 5, but 4 bytes follow",
    ),
    (
        "image as json",
        _header([{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["abc"]}]),
        b"",
        {},
        400,
        "binary data extension",
    ),
    (
        "torn bytes",
        _header([{"name": "image", "datatype": "BYTES", "shape": [2]}]),
        JUNK,
        {},
        400,
        "not 2 length-prefixed images",
    ),
    (
        "unreadable image",
        _header([{"name": "image", "datatype": "BYTES", "shape": [1]}]),
        JUNK,
        {},
        422,
        "cannot decode the upload",
    ),
    (
        "unknown output",
        _header([{**PIXELS_1, "data": [0] * 12288}], [{"name": "logits"}]),
        b"",
        {},
        400,
        "unknown output 'logits'",
    ),
    ("compressed", _header([PIXELS_1]), b"", {"Content-Encoding": "gzip"}, 415, "compressed"),
    (
        "too large",
        _header([{"name": "image", "datatype": "BYTES", "shape": [1]}]),
        struct.pack("<I", MAX_UPLOAD) + bytes(MAX_UPLOAD),
        {},
        413,
        f"exceeds the limit of {MAX_UPLOAD} bytes",
    ),
]


@pytest.mark.parametrize(
    ("header", "binary", "extra", "status", "says"),
    [case[1:] for case in REFUSALS],
    ids=[case[0] for case in REFUSALS],
)
def test_refusals_are_the_protocols_error_json(
    base_url: str, header, binary: bytes, extra: dict, status: int, says: str
) -> None:
    head = header if isinstance(header, bytes) else json.dumps(header).encode()
    if binary:
        size = {"binary_data_size": len(binary)}
        if isinstance(header, dict) and "parameters" not in header["inputs"][0]:
            head = json.dumps(
                {**header, "inputs": [{**header["inputs"][0], "parameters": size}]}
            ).encode()
        extra = {**extra, "Inference-Header-Content-Length": str(len(head))}
    response = httpx.post(
        f"http://{base_url}/v2/models/xray/infer",
        content=head + binary,
        headers={**_auth(), **extra},
    )
    assert response.status_code == status
    body = response.json()
    assert list(body) == ["error"] and says in body["error"]


def test_unknown_model_or_version_and_the_server_stays_up(client) -> None:
    pixels = np.zeros((1, 64, 64, 3), np.uint8)
    with pytest.raises(InferenceServerException, match="unknown model 'nope'; this serves 'xray'"):
        client.infer("nope", [_pixels_input(pixels)], headers=_auth())
    with pytest.raises(InferenceServerException, match="has version 1 only"):
        client.get_model_metadata("xray", "2", headers=_auth())
    wrong = np.zeros((1, 32, 32, 3), np.uint8)  # what a Triton user sees for a wrong shape
    with pytest.raises(InferenceServerException, match=r"takes \[N, 64, 64, 3\]"):
        client.infer("xray", [_pixels_input(wrong)], headers=_auth())
    assert client.is_server_ready()
    assert client.infer("xray", [_pixels_input(pixels)], headers=_auth()).as_numpy("decision").shape


def test_v2_answers_are_not_cached(base_url: str) -> None:
    """/v2 results are about a patient, like /v1's: no proxy or browser may keep them."""
    for path in ("/v2/health/ready", "/v2/models/xray"):
        response = httpx.get(f"http://{base_url}{path}", headers=_auth())
        assert response.status_code == 200 and response.headers["cache-control"] == "no-store"


def test_the_served_name_can_be_chosen(xray_bundle: Path) -> None:
    from fastapi.testclient import TestClient

    from medsight.errors import MedsightError
    from medsight.serving.app import create_app

    with TestClient(create_app(xray_bundle, name="chest-v3")) as client:
        assert client.get("/v2/models/chest-v3/ready").status_code == 200
        assert client.get("/v2/models/xray/ready").status_code == 404
    with pytest.raises(MedsightError, match="model name 'a/b' is not usable"):
        create_app(xray_bundle, name="a/b")
