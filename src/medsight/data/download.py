"""Fetch public datasets: resumable, checksum-verified, atomically placed.

Downloads go to ``<dest>.part`` (resumed with HTTP Range) and archives unpack into a hidden
sibling folder; both are renamed into place only when complete, so an interrupted run never
leaves something that looks finished.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import platformdirs
import requests

from medsight.errors import DownloadError
from medsight.progress import Progress

CHUNK = 1 << 16  # small enough that an interruption loses little of a .part file


@dataclass(frozen=True)
class RemoteDataset:
    """Where a public dataset lives and what its archive unpacks to."""

    name: str
    url: str
    filename: str  # archive name inside ``<root>/<name>/``
    folder: str  # folder the archive unpacks to; holds one sub-folder per class
    classes: tuple[str, ...]
    description: str
    citation: str
    licence: str
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None  # bytes, informational


DATASETS: dict[str, RemoteDataset] = {
    "malaria": RemoteDataset(
        name="malaria",
        url="https://data.lhncbc.nlm.nih.gov/public/Malaria/cell_images.zip",
        filename="cell_images.zip",
        folder="cell_images",
        classes=("Parasitized", "Uninfected"),
        description="NIH/NLM Malaria Screener thin-smear cell crops: 27,558 RGB PNGs, "
        "13,779 Parasitized and 13,779 Uninfected. No official split; split by patient "
        "(file-name prefix C<slide>P<patient>) to avoid leakage.",
        citation="Rajaraman S, Antani SK, Poostchi M, et al. Pre-trained convolutional neural "
        "networks as feature extractors toward improved malaria parasite detection in thin "
        "blood smear images. PeerJ 6:e4568 (2018). doi:10.7717/peerj.4568",
        licence="Published by the U.S. National Library of Medicine (LHNCBC) for research use; "
        "no clinical use.",
        # NLM publishes no checksum. This SHA-256 and size are the ones TensorFlow Datasets
        # registered for this exact URL (tensorflow_datasets/datasets/malaria/checksums.tsv).
        sha256="0a949556b2414159b5100192609805376654c4266d8d187be9b1922fad43c668",
        size=353_452_851,
    ),
}


def cache_dir() -> Path:
    """Where datasets are stored: ``$MEDSIGHT_DATA`` if set, else the user cache folder."""
    env = os.environ.get("MEDSIGHT_DATA")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("medsight")) / "datasets"


def _mismatch(path: Path, sha256: str | None, md5: str | None) -> str | None:
    """Describe how ``path`` fails the given digests, or None when it passes (or none given)."""
    algos = {name: want.lower() for name, want in (("sha256", sha256), ("md5", md5)) if want}
    if not algos:
        return None
    hashers = {name: hashlib.new(name, usedforsecurity=False) for name in algos}
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            for h in hashers.values():
                h.update(chunk)
    for name, want in algos.items():
        got = hashers[name].hexdigest()
        if got != want:
            return f"expected {name} {want}, got {got}"
    return None


def _manual_hint(dest: Path) -> str:
    return f"You can download it by hand and place the file at {dest} (or set MEDSIGHT_DATA)."


def _stream(url: str, part: Path, timeout: float) -> None:
    """Fill ``part`` with the body of ``url``, resuming from its current size when possible."""
    offset = part.stat().st_size if part.exists() else 0
    # identity: byte offsets must refer to the file itself, not to a gzip-encoded stream.
    headers = {"Accept-Encoding": "identity"} | ({"Range": f"bytes={offset}-"} if offset else {})
    with requests.get(url, headers=headers, stream=True, timeout=timeout) as r:
        if r.status_code == 416 and offset:
            # Nothing left to send: the .part file is complete, unless the server's total
            # size disagrees with it (a stale .part from another file), then start over.
            total = r.headers.get("Content-Range", "").rpartition("/")[2]
            if total.isdigit() and int(total) != offset:
                part.unlink()
                _stream(url, part, timeout)
            return
        r.raise_for_status()
        if r.status_code != 206:  # server ignored the Range header: restart from zero
            offset = 0
        length = r.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        with (
            part.open("ab" if offset else "wb") as f,
            Progress(total, f"download {part.name[:-5]}", unit="B") as bar,
        ):
            bar.update(offset)
            for chunk in r.iter_content(CHUNK):
                f.write(chunk)
                bar.update(len(chunk))


def fetch(
    url: str, dest: Path, sha256: str | None = None, md5: str | None = None, timeout: float = 30
) -> Path:
    """Download ``url`` to ``dest`` (resumable, verified); skip the network if already there."""
    dest = Path(dest)
    if dest.is_file() and _mismatch(dest, sha256, md5) is None:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_suffix(dest.suffix + ".part")
    try:
        _stream(url, part, timeout)
    except requests.RequestException as e:
        raise DownloadError(f"Could not download {url}: {e}. {_manual_hint(dest)}") from e
    problem = _mismatch(part, sha256, md5)
    if problem:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"Checksum mismatch for {url}: {problem}. The partial file was deleted; retry, "
            f"or check the URL. {_manual_hint(dest)}"
        )
    os.replace(part, dest)
    return dest


def _check_members(zf: zipfile.ZipFile, archive: Path) -> None:
    """Refuse members that would land outside the extraction folder (zip-slip)."""
    for name in zf.namelist():
        p = PurePosixPath(name.replace("\\", "/"))
        if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]):
            raise DownloadError(f"Refusing to extract {archive}: unsafe member path {name!r}.")


def _complete(folder: Path, classes: tuple[str, ...]) -> bool:
    return all((folder / c).is_dir() for c in classes)


def _extract(archive: Path, target: Path, ds: RemoteDataset) -> None:
    """Unpack into a hidden sibling folder, then rename the class folder into ``target``."""
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=target.parent))
    try:
        try:
            with zipfile.ZipFile(archive) as zf:
                _check_members(zf, archive)
                if ds.sha256 is None and ds.md5 is None and zf.testzip() is not None:
                    raise zipfile.BadZipFile("a member fails its CRC check")
                zf.extractall(tmp)
        except zipfile.BadZipFile as e:
            raise DownloadError(
                f"{archive} is not a valid zip archive ({e}); delete it and run again."
            ) from e
        # Accept archives that unpack to ``<folder>/<class>/`` or straight to ``<class>/``.
        found = tmp / ds.folder if _complete(tmp / ds.folder, ds.classes) else tmp
        if not _complete(found, ds.classes):
            raise DownloadError(
                f"{archive} does not contain the expected class folders {list(ds.classes)}."
            )
        try:
            os.replace(found, target)
        except OSError as e:
            if not _complete(target, ds.classes):  # not a concurrent run that finished first
                raise DownloadError(f"{target} exists but is incomplete; remove it.") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def download_dataset(name: str, root: Path | None = None, url: str | None = None) -> Path:
    """Fetch and unpack a registered dataset; return the folder holding one folder per class.

    Data lands in ``<root>/<name>/<folder>`` (malaria: ``<root>/malaria/cell_images`` with
    ``Parasitized/`` and ``Uninfected/``); the archive is kept next to it. ``root`` defaults to
    :func:`cache_dir`. ``url`` replaces the registry URL (mirrors, tests); the registry checksum
    still applies. A second call finds the folder and does no network access.
    """
    if name not in DATASETS:
        raise DownloadError(f"Unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}.")
    ds = DATASETS[name]
    base = (Path(root) if root is not None else cache_dir()) / ds.name
    target = base / ds.folder
    if _complete(target, ds.classes):
        return target
    archive = fetch(url or ds.url, base / ds.filename, sha256=ds.sha256, md5=ds.md5)
    _extract(archive, target, ds)
    return target


def download_medmnist(flag: str, root: Path | None = None, size: int = 28) -> Path:
    """Fetch one MedMNIST ``.npz`` (URL and MD5 from the ``medmnist`` package's INFO table).

    Lands in ``<root>/medmnist/<flag>.npz`` (``<flag>_<size>.npz`` for size != 28), the names
    the ``medmnist`` package itself expects, so that folder can be passed to it as ``root``.
    """
    try:
        import medmnist
    except ImportError as e:
        raise DownloadError(
            "MedMNIST downloads need the medmnist package: pip install 'medsight[medmnist]'"
        ) from e
    info = medmnist.INFO.get(flag)
    if info is None:
        raise DownloadError(f"Unknown MedMNIST flag {flag!r}; known: {', '.join(medmnist.INFO)}.")
    suffix = "" if size == 28 else f"_{size}"
    url = info.get(f"url{suffix}")
    if url is None:
        raise DownloadError(f"MedMNIST {flag!r} has no {size}x{size} version.")
    base = Path(root) if root is not None else cache_dir()
    return fetch(url, base / "medmnist" / f"{flag}{suffix}.npz", md5=info.get(f"MD5{suffix}"))
