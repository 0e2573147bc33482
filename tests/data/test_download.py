"""Download tests against a local HTTP server (no internet), using real malaria PNGs, Kermany
JPEGs and ieee8023 images with their metadata.csv rows."""

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
import pandas as pd
import platformdirs
import pytest

from medsight.data import download
from medsight.data.download import (
    cache_dir,
    companion,
    download_dataset,
    download_medmnist,
    fetch,
    resolve_data,
)
from medsight.data.sources import load_table
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
        cut = getattr(srv, "cut_once", False)  # True, or the one path to cut
        if cut is True or cut == self.path:  # promise the whole body, send half, hang up
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


# --- kermany: ChestXRay2017.zip (no published checksum: CRCs and folders are checked) ---


@pytest.fixture(scope="module")
def xrays(chest_xray_dir: Path) -> dict[str, bytes]:
    """Two real JPEGs per split and class, keyed by their path inside ChestXRay2017.zip."""
    out = {}
    for split in ("train", "test"):
        for cls in ("NORMAL", "PNEUMONIA"):
            for p in sorted((chest_xray_dir / split / cls).glob("*.jpeg"))[:2]:
                out[f"chest_xray/{split}/{cls}/{p.name}"] = p.read_bytes()
    return out


def _kermany_zip(xrays: dict[str, bytes]) -> bytes:
    # as Mendeley's archive: macOS junk beside the data, a .DS_Store inside it
    junk = {"__MACOSX/chest_xray/._train": b"\x00\x05", "chest_xray/.DS_Store": b"\x00"}
    return _zip({**xrays, **junk})


def test_kermany_unpacks_splits_and_loads(serve, xrays, tmp_path):
    url, _ = serve({"/ChestXRay2017.zip": _kermany_zip(xrays)})
    out = download_dataset("kermany", root=tmp_path, url=url + "/ChestXRay2017.zip")
    assert out == tmp_path / "kermany" / "chest_xray"
    for name, data in xrays.items():
        assert (out.parent / name).read_bytes() == data
    assert sorted(p.name for p in out.parent.iterdir()) == ["ChestXRay2017.zip", "chest_xray"]
    table = load_table(out)
    assert table.class_names == ["NORMAL", "PNEUMONIA"]
    assert table.frame.groupby(["split", "label"]).size().to_dict() == {
        (s, c): 2 for s in ("test", "train") for c in ("NORMAL", "PNEUMONIA")
    }


def test_kermany_without_its_test_split_is_rejected(serve, xrays, tmp_path):
    data = _zip({k: v for k, v in xrays.items() if "/test/" not in k})
    url, _ = serve({"/k.zip": data})
    with pytest.raises(DownloadError, match=r"ChestXRay2017\.zip.*under each of"):
        download_dataset("kermany", root=tmp_path, url=url + "/k.zip")
    assert not (tmp_path / "kermany" / "chest_xray").exists()


def test_kermany_corrupt_member_names_the_archive(serve, xrays, tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in xrays.items():
            zf.writestr(name, data)
    data = bytearray(buf.getvalue())
    first = next(iter(xrays.values()))
    at = bytes(data).index(first[100:140]) + 10  # inside the first JPEG's stored bytes
    data[at] ^= 0xFF
    url, _ = serve({"/k.zip": bytes(data)})
    with pytest.raises(DownloadError, match=r"ChestXRay2017\.zip is not a valid zip.*CRC"):
        download_dataset("kermany", root=tmp_path, url=url + "/k.zip")
    assert not (tmp_path / "kermany" / "chest_xray").exists()


def test_kermany_registry_entry():
    ds = download.DATASETS["kermany"]
    assert ds.url.startswith("https://data.mendeley.com/public-files/datasets/rscbjbr9sj/")
    assert ds.filename == "ChestXRay2017.zip" and ds.folder == "chest_xray"
    assert ds.splits == ("train", "test") and ds.classes == ("NORMAL", "PNEUMONIA")
    assert ds.sha256 is None and ds.md5 is None  # none is published; see the registry comment
    assert "10.17632/rscbjbr9sj" in ds.citation and "CC BY 4.0" in ds.licence


# --- covid: the ieee8023 collection, metadata.csv + the images it lists, at a pinned commit ---


@pytest.fixture(scope="module")
def covid_files(datasets_dir: Path) -> tuple[bytes, dict[str, bytes]]:
    """A small metadata.csv (4 image rows, one row repeated, one CT volume row) and its images."""
    root = datasets_dir / "covid"
    if not (root / "metadata.csv").is_file():
        pytest.skip(f"covid dataset not found at {root}")
    sheet = pd.read_csv(root / "metadata.csv", dtype=str, keep_default_na=False)
    present = sheet["filename"].map(lambda f: (root / "images" / f).is_file())
    rows = sheet[(sheet["folder"] == "images") & present].head(4)
    volume = sheet[sheet["folder"] == "volumes"].head(1)
    small = pd.concat([rows, rows.head(1), volume])
    images = {f: (root / "images" / f).read_bytes() for f in rows["filename"]}
    return small.to_csv(index=False).encode(), images


@pytest.fixture
def covid_server(serve, covid_files, monkeypatch):
    """Serves the collection under /c/; the registry's metadata.csv checksum matches it."""
    sheet, images = covid_files
    entry = dataclasses.replace(download.DATASETS["covid"], sheet_sha256=_sha(sheet))
    monkeypatch.setitem(download.DATASETS, "covid", entry)
    files = {"/c/metadata.csv": sheet} | {f"/c/images/{n}": b for n, b in images.items()}
    url, srv = serve(files)
    return url + "/c/", srv


def test_covid_fetches_the_sheet_and_every_listed_image(covid_server, covid_files, tmp_path):
    url, srv = covid_server
    sheet, images = covid_files
    out = download_dataset("covid", root=tmp_path, url=url)
    assert out == tmp_path / "covid" / "covid-chestxray-dataset"
    assert (out / "metadata.csv").read_bytes() == sheet
    assert {p.name: p.read_bytes() for p in (out / "images").iterdir()} == images
    paths = [path for path, _ in srv.requests]
    assert len(paths) == 1 + len(images)  # the repeated row once; the CT volume not at all
    assert not any("volumes" in p for p in paths)
    assert sorted(p.name for p in out.parent.iterdir()) == ["covid-chestxray-dataset"]
    assert download_dataset("covid", root=tmp_path, url=url) == out
    assert len(srv.requests) == len(paths)  # the second call asks for nothing


def test_covid_interrupted_resumes_where_it_stopped(
    covid_server, covid_files, tmp_path, monkeypatch
):
    monkeypatch.setattr(download, "CHUNK", 1024)
    url, srv = covid_server
    _, images = covid_files
    third = list(images)[2]
    srv.cut_once = f"/c/images/{third}"
    with pytest.raises(DownloadError, match=third):
        download_dataset("covid", root=tmp_path, url=url)
    staging = tmp_path / "covid" / ".covid-chestxray-dataset.part"
    assert not (tmp_path / "covid" / "covid-chestxray-dataset").exists()
    part = staging / "images" / f"{third}.part"
    kept = part.stat().st_size
    assert 0 < kept < len(images[third])
    before = len(srv.requests)
    out = download_dataset("covid", root=tmp_path, url=url)
    again = srv.requests[before:]
    assert again[0] == (f"/c/images/{third}", f"bytes={kept}-")  # nothing fetched twice
    assert len(again) == len(images) - 2
    assert (out / "images" / third).read_bytes() == images[third] and not staging.exists()


@pytest.mark.parametrize("damage", ["not an image", "truncated"])
def test_covid_undecodable_image_is_deleted_and_named(covid_server, covid_files, tmp_path, damage):
    url, srv = covid_server
    name, data = next(iter(covid_files[1].items()))
    bad = b"<html>rate limited</html>" if damage == "not an image" else data[: len(data) // 2]
    srv.files[f"/c/images/{name}"] = bad
    with pytest.raises(DownloadError, match=rf"corrupt {name}.*deleted"):
        download_dataset("covid", root=tmp_path, url=url)
    staging = tmp_path / "covid" / ".covid-chestxray-dataset.part" / "images"
    assert not any(p.name.startswith(name) for p in staging.iterdir())
    assert not (tmp_path / "covid" / "covid-chestxray-dataset").exists()


def test_covid_missing_image_is_an_error(covid_server, covid_files, tmp_path):
    url, srv = covid_server
    name = next(iter(covid_files[1]))
    del srv.files[f"/c/images/{name}"]
    with pytest.raises(DownloadError, match=r"404.*" + name.replace(".", r"\.")):
        download_dataset("covid", root=tmp_path, url=url)


def test_covid_sheet_with_wrong_checksum_is_refused(covid_server, tmp_path):
    url, srv = covid_server
    srv.files["/c/metadata.csv"] += b"\n"
    with pytest.raises(DownloadError, match="Checksum mismatch.*metadata.csv"):
        download_dataset("covid", root=tmp_path, url=url)
    assert len(srv.requests) == 1  # no image fetched against an unverified sheet


@pytest.mark.parametrize(
    ("sheet", "problem"),
    [
        (b"patientid,finding\n1,COVID-19\n", "missing column"),
        (b"patientid,finding,view,modality,date,folder,filename\n1,x,PA,X-ray,,images,../a.png\n",
         "unsafe image file name"),
        (b"patientid,finding,view,modality,date,folder,filename\n1,x,PA,X-ray,,volumes,a.nii\n",
         "lists no images"),
    ],
)  # fmt: skip
def test_covid_bad_sheet_is_named(serve, tmp_path, monkeypatch, sheet, problem):
    entry = dataclasses.replace(download.DATASETS["covid"], sheet_sha256=None)
    monkeypatch.setitem(download.DATASETS, "covid", entry)
    url, _ = serve({"/c/metadata.csv": sheet})
    with pytest.raises(DownloadError, match=rf"metadata\.csv.*{problem}"):
        download_dataset("covid", root=tmp_path, url=url + "/c")
    staging = tmp_path / "covid" / ".covid-chestxray-dataset.part"
    assert not (staging / "metadata.csv").exists()  # deleted: a second run fetches it again
    assert not (tmp_path / "covid" / "covid-chestxray-dataset").exists()


def test_covid_registry_entry_is_pinned():
    ds = download.DATASETS["covid"]
    commit = download.IEEE8023_COMMIT
    assert len(commit) == 40 and ds.url.endswith(f"/ieee8023/covid-chestxray-dataset/{commit}/")
    assert ds.sheet == "metadata.csv" and ds.images == "images"
    assert ds.sheet_sha256 is not None and len(ds.sheet_sha256) == 64


# --- names for --data, and the second dataset a recipe needs ---


def test_a_name_downloads_only_when_no_such_path(serve, xrays, tmp_path, monkeypatch):
    url, srv = serve({"/k.zip": _kermany_zip(xrays)})
    entry = dataclasses.replace(download.DATASETS["kermany"], url=url + "/k.zip")
    monkeypatch.setitem(download.DATASETS, "kermany", entry)
    monkeypatch.setenv("MEDSIGHT_DATA", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    table = load_table("kermany")  # --data kermany
    assert set(table.frame["split"]) == {"train", "test"} and len(table) == len(xrays)
    assert Path(table.frame["path"][0]).is_relative_to(tmp_path / "cache" / "kermany")
    (tmp_path / "kermany").mkdir()  # a folder of the user's, of that name, wins
    assert resolve_data("kermany") == tmp_path / "kermany"
    assert len(srv.requests) == 1


def test_companion_beside_the_data_else_the_download(serve, xrays, tmp_path, monkeypatch):
    url, srv = serve({"/k.zip": _kermany_zip(xrays)})
    entry = dataclasses.replace(download.DATASETS["kermany"], url=url + "/k.zip")
    monkeypatch.setitem(download.DATASETS, "kermany", entry)
    monkeypatch.setenv("MEDSIGHT_DATA", str(tmp_path / "cache"))
    (tmp_path / "mine" / "covid").mkdir(parents=True)
    (tmp_path / "mine" / "chest_xray").mkdir()
    assert companion(tmp_path / "mine" / "covid", "chest_xray", "kermany") == (
        tmp_path / "mine" / "chest_xray"
    )
    assert srv.requests == []
    (tmp_path / "mine" / "chest_xray").rmdir()
    got = companion(tmp_path / "mine" / "covid", "chest_xray", "kermany")
    assert got == tmp_path / "cache" / "kermany" / "chest_xray" and len(srv.requests) == 1
