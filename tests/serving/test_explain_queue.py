"""Explanations run apart from predictions: a slow one never holds a prediction up, and the
number in progress is bounded (one more is a 503 ``busy``)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from medsight.explanation import cam
from medsight.serving import app as app_module
from medsight.serving.app import create_app


@pytest.fixture
def xray_bytes(chest_xray_dir: Path) -> bytes:
    return sorted((chest_xray_dir / "test" / "NORMAL").glob("*.jpeg"))[0].read_bytes()


def _upload(data: bytes) -> dict:
    return {"files": {"file": ("x.jpeg", data, "image/jpeg")}}


def test_a_stuck_explanation_neither_blocks_predictions_nor_queues_without_bound(
    xray_bundle: Path, xray_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_explain, release, entered = cam.explain, threading.Event(), threading.Event()

    def slow_explain(bundle, pixels, target, method):
        entered.set()
        assert release.wait(60), "the test never released the explanation"
        return real_explain(bundle, pixels, target, method)

    monkeypatch.setattr(cam, "explain", slow_explain)
    app = create_app(xray_bundle, prefer_onnx=False, max_explanations=1)
    with TestClient(app) as client, ThreadPoolExecutor(1) as background:
        pending = background.submit(client.post, "/v1/explain", **_upload(xray_bytes))
        assert entered.wait(60)
        predicted = client.post("/v1/predict", **_upload(xray_bytes))  # while it is stuck
        assert predicted.status_code == 200 and not pending.done()
        busy = client.post("/v1/explain", **_upload(xray_bytes))
        assert busy.status_code == 503
        assert busy.json() == {
            "error": "busy",
            "detail": "1 explanations are in progress; retry shortly",
        }
        release.set()
        explained = pending.result(60)
        assert explained.status_code == 200
        assert explained.json()["prediction"]["probabilities"] == predicted.json()["probabilities"]
        assert client.post("/v1/explain", **_upload(xray_bytes)).status_code == 200  # slot freed


def test_the_limits_are_reported(xray_bundle: Path) -> None:
    with TestClient(create_app(xray_bundle, max_explanations=2)) as client:
        serving = client.get("/v1/model").json()["serving"]
    assert serving["max_explanations"] == 2
    assert serving["max_pixels"] == 40_000_000 and serving["max_decoded_bytes"] == 256 * 2**20


@pytest.mark.parametrize("max_decodes", [1, 3])
def test_uploads_decoded_at_once_are_bounded(
    xray_bundle: Path, xray_bytes: bytes, monkeypatch: pytest.MonkeyPatch, max_decodes: int
) -> None:
    """Decoding's memory is bounded by max_decodes x max_decoded_bytes: the others wait."""
    real_read, lock = app_module.read_image_bytes, threading.Lock()
    state = {"now": 0, "most": 0}

    def counted_read(*args, **kwargs):
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        try:
            threading.Event().wait(0.1)  # long enough for the others to arrive meanwhile
            return real_read(*args, **kwargs)
        finally:
            with lock:
                state["now"] -= 1

    monkeypatch.setattr(app_module, "read_image_bytes", counted_read)
    with TestClient(create_app(xray_bundle, max_decodes=max_decodes)) as client:
        with ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(lambda _: client.post("/v1/predict", **_upload(xray_bytes)), range(8))
            )
        assert client.get("/v1/model").json()["serving"]["max_decodes"] == max_decodes
    assert [a.status_code for a in answers] == [200] * 8
    assert state["most"] == max_decodes


def test_a_server_on_an_export_imports_pytorch_only_for_the_first_explanation(
    xray_bundle: Path, chest_xray_dir: Path, tmp_path: Path
) -> None:
    """About 500 MB and seconds of start-up that a server asked only for predictions never
    pays; the explanation still comes, from the PyTorch model, and agrees with the answer."""
    import json
    import shutil
    import subprocess
    import sys

    from medsight.serving.export import export_onnx

    folder = Path(shutil.copytree(xray_bundle, tmp_path / "bundle"))
    export_onnx(folder)
    image = sorted((chest_xray_dir / "test" / "PNEUMONIA").glob("*.jpeg"))[0]
    code = (
        "import json, sys\n"
        "from fastapi.testclient import TestClient\n"
        "from medsight.serving.app import create_app\n"
        f"client = TestClient(create_app({str(folder)!r}))\n"
        f"data = open({str(image)!r}, 'rb').read()\n"
        "upload = {'file': ('x.jpeg', data, 'image/jpeg')}\n"
        "seen = ['torch' in sys.modules]\n"
        "predicted = client.post('/v1/predict', files=upload).json()\n"
        "seen.append('torch' in sys.modules)\n"
        "explained = client.post('/v1/explain', files=upload).json()\n"
        "seen.append('torch' in sys.modules)\n"
        "print(json.dumps([seen, predicted, explained['prediction'], explained['target_class']]))\n"
    )
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert child.returncode == 0, child.stderr
    seen, predicted, again, target = json.loads(child.stdout.splitlines()[-1])
    assert seen == [False, False, True]
    assert predicted["model"]["engine"] == "onnxruntime"
    assert again["probabilities"] == predicted["probabilities"]
    assert target == predicted["decision"]
