"""Bundles from the Hugging Face Hub (``hf://org/name``), tested against a local stand-in for the
Hub: a folder served on 127.0.0.1 with the Hub's own routes (repo info, file tree, resolve), which
``huggingface_hub`` reaches through ``HF_ENDPOINT``."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from medsight.bundle.hub import fetch_hub_bundle, is_hub_uri
from medsight.errors import MedsightError

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _hub_handler(repos: dict[str, Path]) -> type[BaseHTTPRequestHandler]:
    class Hub(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep the test output clean
            pass

        def _send(self, code: int, body: bytes = b"", headers: dict | None = None) -> None:
            self.send_response(code)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _files(self, root: Path) -> list[Path]:
            return sorted(f for f in root.rglob("*") if f.is_file())

        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            for repo, root in repos.items():
                if path.startswith(f"/api/models/{repo}/tree/"):
                    tree = [
                        {
                            "type": "file",
                            "path": f.relative_to(root).as_posix(),
                            "size": f.stat().st_size,
                            "oid": hashlib.sha1(f.read_bytes()).hexdigest(),
                        }
                        for f in self._files(root)
                    ]
                    return self._send(200, json.dumps(tree).encode())
                if path.startswith(f"/api/models/{repo}/revision/"):
                    siblings = [
                        {"rfilename": f.relative_to(root).as_posix()} for f in self._files(root)
                    ]
                    info = {"id": repo, "sha": COMMIT, "siblings": siblings}
                    return self._send(200, json.dumps(info).encode())
                prefix = f"/{repo}/resolve/"
                if path.startswith(prefix):
                    file = root / path[len(prefix) :].partition("/")[2]
                    if not file.is_file():
                        return self._send(404, b"", {"X-Error-Code": "EntryNotFound"})
                    data = file.read_bytes()
                    etag = f'"{hashlib.sha1(data).hexdigest()}"'
                    return self._send(200, data, {"X-Repo-Commit": COMMIT, "ETag": etag})
            self._send(404, b"", {"X-Error-Code": "RepoNotFound"})

        do_HEAD = do_GET

    return Hub


@pytest.fixture
def hub(xray_bundle: Path, tmp_path: Path) -> Iterator[tuple[str, ThreadingHTTPServer]]:
    """The xray bundle as Hub repo ``lab/xray``; a repo without bundle.json as ``lab/notes``."""
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "README.md").write_text("# not a bundle\n")
    shutil.copytree(xray_bundle, tmp_path / "xray")
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), _hub_handler({"lab/xray": tmp_path / "xray", "lab/notes": notes})
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", server
    server.shutdown()
    server.server_close()


SCRIPT = """
import json, sys, medsight
from medsight.errors import MedsightError
try:
    model = medsight.load(sys.argv[1])
    print(json.dumps({"probabilities": model.predict(sys.argv[2]).probabilities,
                      "folder": str(model.folder)}))
except MedsightError as exc:
    print(json.dumps({"error": str(exc)}))
"""


def _load(uri: str, image: Path, endpoint: str, home: Path, offline: bool = False) -> dict:
    """``medsight.load(uri).predict(image)`` in a fresh process (huggingface_hub reads its
    endpoint and cache from the environment when imported)."""
    env = {
        **os.environ,
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(home),
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    env.pop("HF_HUB_OFFLINE", None)
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, uri, str(image)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_bundle_loads_from_the_hub_and_then_from_its_cache_offline(
    hub, xray_bundle: Path, chest_xray_dir: Path, tmp_path: Path
) -> None:
    import medsight

    endpoint, server = hub
    image = sorted((chest_xray_dir / "test" / "NORMAL").glob("*.jpeg"))[0]
    local = medsight.load(xray_bundle).predict(image).probabilities
    online = _load("hf://lab/xray", image, endpoint, tmp_path / "home")
    assert online["probabilities"] == pytest.approx(local, abs=1e-6)
    assert COMMIT in online["folder"]  # the Hub cache's snapshot of that commit
    server.shutdown()  # the Hub is gone: the cached bundle still loads, offline or not
    server.server_close()
    assert _load("hf://lab/xray", image, endpoint, tmp_path / "home", offline=True)[
        "probabilities"
    ] == pytest.approx(local, abs=1e-6)
    assert _load("hf://lab/xray@main", image, endpoint, tmp_path / "home")[
        "probabilities"
    ] == pytest.approx(local, abs=1e-6)
    never = _load("hf://lab/xray", image, endpoint, tmp_path / "other-home")
    assert "cannot reach the Hugging Face Hub" in never["error"]
    assert "not in the local Hub cache" in never["error"]


def test_hub_repos_that_are_no_bundle_or_do_not_exist_are_refused(
    hub, chest_xray_dir: Path, tmp_path: Path
) -> None:
    endpoint, _ = hub
    image = sorted((chest_xray_dir / "test" / "NORMAL").glob("*.jpeg"))[0]
    notes = _load("hf://lab/notes", image, endpoint, tmp_path / "home")
    assert "holds no bundle.json" in notes["error"]
    missing = _load("hf://lab/missing", image, endpoint, tmp_path / "home")
    assert "no such model repository" in missing["error"]


@pytest.mark.parametrize("uri", ["hf://xray", "hf://lab/", "hf:///xray", "hf://a/b/c"])
def test_malformed_hub_names_are_refused_before_any_download(uri: str) -> None:
    assert is_hub_uri(uri)
    with pytest.raises(MedsightError, match="hf://ORG/NAME"):
        fetch_hub_bundle(uri)
    assert not is_hub_uri("/data/bundle") and not is_hub_uri(Path("hf:/x"))
