"""The web page in headless Chromium against the real server (uvicorn on a free port): upload a
real X-ray and see the decision, the probabilities and the heat-map, with no console errors."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import uvicorn

from medsight.serving.app import create_app

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(bundle: Path, **options: object) -> Iterator[str]:
    """Run the app with uvicorn in a thread; yield its base URL; shut it down gracefully."""
    port = _free_port()
    config = uvicorn.Config(
        create_app(bundle, **options), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(xray_bundle: Path) -> Iterator[str]:
    yield from _serve(xray_bundle)


@pytest.fixture(scope="module")
def keyed_server(xray_bundle: Path) -> Iterator[str]:
    yield from _serve(xray_bundle, api_key="page-key")


@pytest.fixture(scope="module")
def xray(chest_xray_dir: Path) -> Path:
    files = sorted((chest_xray_dir / "test" / "PNEUMONIA").glob("*.jpeg"))
    if not files:
        pytest.skip(f"no X-rays under {chest_xray_dir / 'test' / 'PNEUMONIA'}")
    return files[0]


def _open(browser: Browser, url: str) -> tuple[Page, list[str]]:
    """A new page at ``url`` that records console errors and uncaught exceptions."""
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    return page, errors


def test_upload_shows_decision_probabilities_and_heatmap(browser: Browser, server: str, xray: Path):
    page, errors = _open(browser, server)
    try:
        assert "Not for clinical use" in page.text_content("#notice")
        assert page.is_visible("#notice")
        page.wait_for_function(
            "document.querySelector('#model-info').textContent.includes('malaria_lenet')"
        )
        assert page.is_hidden("#result")

        page.set_input_files("#file", str(xray))
        page.wait_for_selector("#result", state="visible", timeout=30_000)
        assert page.text_content("#decision") in ("NORMAL", "PNEUMONIA")
        assert page.text_content("#threshold") == "40.0 %"
        assert page.text_content("#positive-class") == "PNEUMONIA"
        rows = page.locator("#probabilities tbody tr")
        assert rows.count() == 2 and "NORMAL" in rows.nth(0).text_content()
        page.wait_for_function("document.querySelector('#overlay').naturalWidth === 64")
        assert page.get_attribute("#overlay", "src").startswith("data:image/png;base64,")
        assert page.is_visible("#overlay") and page.is_visible("#image")
        assert "gradcam" in page.text_content("#explained")
        float(page.text_content("#faithfulness"))  # a number, not "not available"

        page.uncheck("#show-overlay")
        assert page.is_hidden("#overlay")
        page.check("#show-overlay")
        page.fill("#opacity", "30")
        assert (
            page.evaluate("getComputedStyle(document.querySelector('#overlay')).opacity") == "0.3"
        )
        assert errors == []

        # a text file named .png: the page shows the server's reason instead of a result
        page.set_input_files(
            "#file", files=[{"name": "notes.png", "mimeType": "image/png", "buffer": b"notes"}]
        )
        page.wait_for_selector("#error", state="visible")
        assert "unrecognised content" in page.text_content("#error")
    finally:
        page.close()


def test_page_sends_the_api_key(browser: Browser, keyed_server: str, xray: Path):
    page, _ = _open(browser, keyed_server)  # 401s here are expected console errors
    try:
        page.set_input_files("#file", str(xray))
        page.wait_for_selector("#error", state="visible")
        assert "missing_api_key" in page.text_content("#error")
        page.fill("#api-key", "page-key")
        page.set_input_files("#file", str(xray))
        page.wait_for_selector("#result", state="visible", timeout=30_000)
        assert page.is_hidden("#error")
        assert page.text_content("#decision") in ("NORMAL", "PNEUMONIA")
    finally:
        page.close()


@pytest.fixture(scope="module")
def cells_server(cell_bundle: Path) -> Iterator[str]:
    yield from _serve(cell_bundle)


def test_an_out_of_domain_image_gets_a_plain_warning_not_a_decision(
    browser: Browser, cells_server: str, xray: Path
):
    page, errors = _open(browser, cells_server)
    try:
        page.set_input_files("#file", str(xray))  # a chest X-ray for a blood-smear model
        page.wait_for_selector("#result", state="visible", timeout=30_000)
        assert page.is_visible("#domain-warning")
        assert "does not look like the images" in page.text_content("#domain-warning")
        decision = page.text_content("#decision")
        assert decision == "No decision: image out of domain"
        assert errors == []
    finally:
        page.close()
