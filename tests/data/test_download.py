"""Download tests against a local HTTP server (no internet), using real malaria PNGs."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import socket
import sys
import threading
import zipfile
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import platformdirs
import pytest

from medsight.data import download
from medsight.data.download import cache_dir, download_dataset, download_medmnist, fetch
from medsight.errors import DownloadError


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.files``; honours ``Range`` only when ``server.ranges`` is true."""

    def do_GET(self) -> None:
        srv = self.server
        rng = self.headers.get("Range")
        srv.requests.append((self.path, rng))  # type: ignore[attr-defined]
        body = srv.files.get(self.path.split("?")[0])  # type: ignore[attr-defined]
        if body is None:
            self.send_error(404)
            return
        if rng and srv.ranges:  # type: ignore[attr-defined]
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            body = body[start:]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if getattr(srv, "cut_once", False):  # promise the whole body, send half, hang up
            srv.cut_once = False  # type: ignore[attr-defined]
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


Serve = Callable[..., tuple[str, ThreadingHTTPServer]]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Start a server on 127.0.0.1 (ephemeral port); returns (base URL, server)."""
    servers: list[ThreadingHTTPServer] = []

    def start(files: dict[str, bytes], ranges: bool = True) -> tuple[str, ThreadingHTTPServer]:
        srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        srv.files, srv.ranges, srv.requests = files, ranges, []  # type: ignore[attr-defined]
        threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}", srv

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


@pytest.fixture(scope="module")
def images(malaria_dir: Path) -> dict[str, bytes]:
    """A few real PNGs keyed by their path inside the archive."""
    out = {}
    for cls, n in (("Parasitized", 3), ("Uninfected", 2)):
        for p in sorted((malaria_dir / cls).glob("*.png"))[:n]:
            out[f"cell_images/{cls}/{p.name}"] = p.read_bytes()
    return out


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture
def archive(images: dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> bytes:
    """The test zip; the registry's malaria checksum is patched to match it."""
    data = _zip(images)
    entry = dataclasses.replace(
        download.DATASETS["malaria"], sha256=hashlib.sha256(data).hexdigest(), size=len(data)
    )
    monkeypatch.setitem(download.DATASETS, "malaria", entry)
    return data


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/cell_images.zip"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_download_dataset_extracts_class_folders(serve, archive, images, tmp_path):
    url, srv = serve({"/cell_images.zip": archive})
    out = download_dataset("malaria", root=tmp_path, url=url + "/cell_images.zip")
    assert out == tmp_path / "malaria" / "cell_images"
    assert len(list((out / "Parasitized").glob("*.png"))) == 3
    assert len(list((out / "Uninfected").glob("*.png"))) == 2
    for name, data in images.items():
        assert (out.parent / name).read_bytes() == data
    leftovers = [p.name for p in (tmp_path / "malaria").iterdir()]
    assert sorted(leftovers) == ["cell_images", "cell_images.zip"]  # no .part, no .extract-*


def test_second_call_makes_no_request(serve, archive, tmp_path):
    url, srv = serve({"/cell_images.zip": archive})
    first = download_dataset("malaria", root=tmp_path, url=url + "/cell_images.zip")
    n = len(srv.requests)
    assert n == 1
    assert download_dataset("malaria", root=tmp_path, url=url + "/cell_images.zip") == first
    assert download_dataset("malaria", root=tmp_path, url=_closed_port_url()) == first
    assert len(srv.requests) == n


def test_archive_placed_by_hand_is_extracted_without_network(archive, tmp_path):
    (tmp_path / "malaria").mkdir()
    (tmp_path / "malaria" / "cell_images.zip").write_bytes(archive)
    out = download_dataset("malaria", root=tmp_path, url=_closed_port_url())
    assert (out / "Parasitized").is_dir() and (out / "Uninfected").is_dir()


def test_default_root_follows_medsight_data(serve, archive, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSIGHT_DATA", str(tmp_path / "store"))
    url, _ = serve({"/cell_images.zip": archive})
    out = download_dataset("malaria", url=url + "/cell_images.zip")
    assert out == tmp_path / "store" / "malaria" / "cell_images"


@pytest.mark.parametrize("algo", ["sha256", "md5"])
def test_checksum_mismatch_leaves_nothing(serve, archive, tmp_path, algo):
    url, _ = serve({"/a.zip": archive})
    dest = tmp_path / "a.zip"
    wrong = "0" * (64 if algo == "sha256" else 32)
    with pytest.raises(DownloadError) as err:
        fetch(url + "/a.zip", dest, **{algo: wrong})
    actual = hashlib.new(algo, archive).hexdigest()
    assert url + "/a.zip" in str(err.value)
    assert wrong in str(err.value) and actual in str(err.value)
    assert not dest.exists()
    assert not (tmp_path / "a.zip.part").exists()


def test_resume_uses_range_request(serve, archive, tmp_path):
    url, srv = serve({"/a.zip": archive})
    dest = tmp_path / "a.zip"
    half = len(archive) // 2
    (tmp_path / "a.zip.part").write_bytes(archive[:half])
    assert fetch(url + "/a.zip", dest, sha256=_sha(archive)) == dest
    assert srv.requests == [("/a.zip", f"bytes={half}-")]
    assert dest.read_bytes() == archive
    assert not (tmp_path / "a.zip.part").exists()


def test_interrupted_download_raises_then_resumes(serve, archive, tmp_path, monkeypatch):
    monkeypatch.setattr(download, "CHUNK", 1024)  # the test archive is smaller than one chunk
    url, srv = serve({"/a.zip": archive})
    srv.cut_once = True
    dest = tmp_path / "a.zip"
    with pytest.raises(DownloadError, match="a.zip"):
        fetch(url + "/a.zip", dest, sha256=_sha(archive))
    part = tmp_path / "a.zip.part"
    part_size = part.stat().st_size
    assert not dest.exists() and 0 < part_size < len(archive)
    fetch(url + "/a.zip", dest, sha256=_sha(archive))
    assert srv.requests[-1][1] == f"bytes={part_size}-"
    assert dest.read_bytes() == archive and not part.exists()


def test_server_ignoring_range_restarts_from_zero(serve, archive, tmp_path):
    url, srv = serve({"/a.zip": archive}, ranges=False)
    dest = tmp_path / "a.zip"
    (tmp_path / "a.zip.part").write_bytes(b"x" * (len(archive) // 2))  # garbage, not a prefix
    fetch(url + "/a.zip", dest, sha256=_sha(archive))
    assert srv.requests[0][1] is not None  # a Range was asked for, and ignored
    assert dest.read_bytes() == archive


def test_complete_part_file_gets_416_and_is_kept(serve, archive, tmp_path):
    url, srv = serve({"/a.zip": archive})
    (tmp_path / "a.zip.part").write_bytes(archive)
    fetch(url + "/a.zip", tmp_path / "a.zip", sha256=_sha(archive))
    assert (tmp_path / "a.zip").read_bytes() == archive
    assert len(srv.requests) == 1


def test_oversized_part_file_is_restarted(serve, archive, tmp_path):
    url, srv = serve({"/a.zip": archive})
    (tmp_path / "a.zip.part").write_bytes(archive + b"junk")
    fetch(url + "/a.zip", tmp_path / "a.zip")
    assert (tmp_path / "a.zip").read_bytes() == archive
    assert [r[1] for r in srv.requests] == [f"bytes={len(archive) + 4}-", None]


def test_existing_dest_with_matching_checksum_skips_network(archive, tmp_path):
    dest = tmp_path / "a.zip"
    dest.write_bytes(archive)
    assert fetch(_closed_port_url(), dest, sha256=_sha(archive)) == dest


def test_existing_dest_with_wrong_checksum_is_replaced(serve, archive, tmp_path):
    url, _ = serve({"/a.zip": archive})
    dest = tmp_path / "a.zip"
    dest.write_bytes(b"stale")
    fetch(url + "/a.zip", dest, sha256=_sha(archive))
    assert dest.read_bytes() == archive


def test_unreachable_url_says_where_to_put_the_file(tmp_path):
    url = _closed_port_url()
    dest = tmp_path / "sub" / "a.zip"
    with pytest.raises(DownloadError) as err:
        fetch(url, dest, timeout=5)
    msg = str(err.value)
    assert url in msg and str(dest) in msg and "MEDSIGHT_DATA" in msg


def test_http_error_is_a_download_error(serve, tmp_path):
    url, _ = serve({})
    with pytest.raises(DownloadError, match="404"):
        fetch(url + "/missing.zip", tmp_path / "missing.zip")
    assert not (tmp_path / "missing.zip").exists()


@pytest.mark.parametrize("evil", ["../evil.png", "cell_images/../../evil.png", "/tmp/evil.png"])
def test_zip_slip_member_rejected(serve, images, tmp_path, monkeypatch, evil):
    data = _zip({**images, evil: b"pwned"})
    entry = dataclasses.replace(download.DATASETS["malaria"], sha256=_sha(data))
    monkeypatch.setitem(download.DATASETS, "malaria", entry)
    url, _ = serve({"/cell_images.zip": data})
    with pytest.raises(DownloadError, match="unsafe member"):
        download_dataset("malaria", root=tmp_path, url=url + "/cell_images.zip")
    assert not (tmp_path / "evil.png").exists()
    assert sorted(p.name for p in (tmp_path / "malaria").iterdir()) == ["cell_images.zip"]


def test_corrupt_archive_without_checksum(serve, tmp_path, monkeypatch):
    entry = dataclasses.replace(download.DATASETS["malaria"], sha256=None)
    monkeypatch.setitem(download.DATASETS, "malaria", entry)
    url, _ = serve({"/cell_images.zip": b"not a zip at all"})
    with pytest.raises(DownloadError, match="not a valid zip"):
        download_dataset("malaria", root=tmp_path, url=url + "/cell_images.zip")
    assert not (tmp_path / "malaria" / "cell_images").exists()


def test_archive_without_class_folders_rejected(serve, tmp_path, monkeypatch):
    data = _zip({"cell_images/readme.txt": b"hi"})
    entry = dataclasses.replace(download.DATASETS["malaria"], sha256=_sha(data))
    monkeypatch.setitem(download.DATASETS, "malaria", entry)
    url, _ = serve({"/cell_images.zip": data})
    with pytest.raises(DownloadError, match="class folders"):
        download_dataset("malaria", root=tmp_path, url=url + "/cell_images.zip")


def test_unknown_dataset(tmp_path):
    with pytest.raises(DownloadError, match="malaria"):
        download_dataset("nope", root=tmp_path)


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDSIGHT_DATA", str(tmp_path))
    assert cache_dir() == tmp_path
    monkeypatch.delenv("MEDSIGHT_DATA")
    assert cache_dir() == Path(platformdirs.user_cache_dir("medsight")) / "datasets"


def test_registry_entry_is_complete():
    ds = download.DATASETS["malaria"]
    assert ds.url == "https://data.lhncbc.nlm.nih.gov/public/Malaria/cell_images.zip"
    assert ds.classes == ("Parasitized", "Uninfected")
    assert ds.sha256 is not None and len(ds.sha256) == 64
    assert "PeerJ" in ds.citation


@pytest.mark.parametrize("size", [28, 64])
def test_download_medmnist(serve, datasets_dir, tmp_path, monkeypatch, size):
    medmnist = pytest.importorskip("medmnist", reason="medmnist (optional extra) not installed")
    src = np.load(datasets_dir / "medmnist" / "varun19424_pneumonia_mnist" / "pneumoniamnist.npz")
    buf = io.BytesIO()
    np.savez(buf, **{k: src[k][:8] for k in src.files})
    data = buf.getvalue()
    suffix = "" if size == 28 else f"_{size}"
    url, _ = serve({"/p.npz": data})
    info = medmnist.INFO["pneumoniamnist"]
    monkeypatch.setitem(info, f"url{suffix}", url + "/p.npz?download=1")
    monkeypatch.setitem(info, f"MD5{suffix}", hashlib.md5(data).hexdigest())
    out = download_medmnist("pneumoniamnist", root=tmp_path, size=size)
    assert out == tmp_path / "medmnist" / f"pneumoniamnist{suffix}.npz"
    assert np.array_equal(np.load(out)["train_images"], src["train_images"][:8])


def test_download_medmnist_wrong_md5(serve, tmp_path, monkeypatch):
    medmnist = pytest.importorskip("medmnist", reason="medmnist (optional extra) not installed")
    url, _ = serve({"/p.npz": b"payload"})
    info = medmnist.INFO["pneumoniamnist"]
    monkeypatch.setitem(info, "url", url + "/p.npz")
    monkeypatch.setitem(info, "MD5", "0" * 32)
    with pytest.raises(DownloadError, match="md5"):
        download_medmnist("pneumoniamnist", root=tmp_path)


def test_download_medmnist_unknown_flag(tmp_path):
    pytest.importorskip("medmnist", reason="medmnist (optional extra) not installed")
    with pytest.raises(DownloadError, match="pneumoniamnist"):
        download_medmnist("nosuchmnist", root=tmp_path)


def test_download_medmnist_without_package(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "medmnist", None)  # makes `import medmnist` fail
    with pytest.raises(DownloadError, match=r"medsight\[medmnist\]"):
        download_medmnist("pneumoniamnist", root=tmp_path)
