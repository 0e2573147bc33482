"""Fetch public datasets: resumable, checksum-verified, atomically placed.

Downloads go to ``<dest>.part`` (resumed with HTTP Range) and archives unpack into a hidden
sibling folder; both are renamed into place only when complete, so an interrupted run never
leaves something that looks finished. A collection fetched file by file (the ieee8023 images)
fills a hidden ``.<folder>.part/`` folder the same way and is renamed when every file is in.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import quote

import platformdirs
import requests

from medsight.errors import DataError, DownloadError
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
    splits: tuple[str, ...] = ()  # split folders, each holding the class folders


@dataclass(frozen=True)
class RemoteCollection:
    """A metadata sheet and the images it lists, fetched file by file from a pinned commit."""

    name: str
    url: str  # base URL of the repository at that commit, ending in "/"
    folder: str  # holds ``sheet`` and ``images/`` once complete
    description: str
    citation: str
    licence: str
    sheet: str = "metadata.csv"
    sheet_sha256: str | None = None
    images: str = "images"  # the sheet rows whose ``folder`` is this are fetched


IEEE8023_COMMIT = "584034aa7fbf06496741f11008d72fd791c8e443"  # 2020-06-22, 751 metadata rows

DATASETS: dict[str, RemoteDataset | RemoteCollection] = {
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
    "kermany": RemoteDataset(
        name="kermany",
        # ChestXRay2017.zip of Mendeley Data doi:10.17632/rscbjbr9sj.2 (redirects to its S3 store)
        url="https://data.mendeley.com/public-files/datasets/rscbjbr9sj/files/"
        "f12eaf6d-6023-432f-acc9-80c9d7393433/file_downloaded",
        filename="ChestXRay2017.zip",
        folder="chest_xray",
        classes=("NORMAL", "PNEUMONIA"),
        splits=("train", "test"),
        description="Kermany pediatric chest X-rays (Guangzhou Women and Children's Medical "
        "Center): 5,856 JPEGs, train 1,349 NORMAL / 3,883 PNEUMONIA, test 234 / 390 (the "
        "standard 624-image test split). About 1.2 GB.",
        citation="Kermany DS, Goldbaum M, Cai W, et al. Identifying Medical Diagnoses and "
        "Treatable Diseases by Image-Based Deep Learning. Cell 172(5):1122-1131 (2018); data: "
        "Kermany D, Zhang K, Goldbaum M, Mendeley Data V2, doi:10.17632/rscbjbr9sj.2",
        licence="CC BY 4.0",
        # Mendeley publishes no checksum for this file, and none was found elsewhere: the
        # archive is checked by its members' CRCs and its split/class folders instead.
    ),
    "covid": RemoteCollection(
        name="covid",
        url="https://raw.githubusercontent.com/ieee8023/covid-chestxray-dataset/"
        f"{IEEE8023_COMMIT}/",
        folder="covid-chestxray-dataset",
        description="COVID-19 image data collection (ieee8023) as of 2020-06-22: metadata.csv "
        "(751 rows, one per image: patientid, finding, view, modality, date, ...) and the "
        "X-ray and CT images of its images/ folder; the CT volumes are not fetched.",
        citation="Cohen JP, Morrison P, Dao L, Roth K, Duong TQ, Ghassemi M. COVID-19 Image "
        "Data Collection: Prospective Predictions Are the Future. MELBA (2020). "
        "arXiv:2006.11988",
        licence="metadata.csv CC BY-NC-SA 4.0; each image under the licence in its row's "
        "license column. Not for claims of diagnostic performance.",
        # GitHub publishes no checksums. This SHA-256 is that of metadata.csv at the commit
        # above, from a byte-identical copy of it; images are checked by decoding them.
        sheet_sha256="e46ffab4cdeb4866491d32afe466baefd7acbcf268a75c260f81d8520b8664a0",
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


def _stream(url: str, part: Path, timeout: float, bar: bool = True) -> None:
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
                _stream(url, part, timeout, bar)
            return
        r.raise_for_status()
        if r.status_code != 206:  # server ignored the Range header: restart from zero
            offset = 0
        length = r.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        shown = Progress(total, f"download {part.name[:-5]}", unit="B") if bar else None
        with part.open("ab" if offset else "wb") as f, shown or contextlib.nullcontext():
            if shown:
                shown.update(offset)
            for chunk in r.iter_content(CHUNK):
                f.write(chunk)
                if shown:
                    shown.update(len(chunk))


def fetch(
    url: str,
    dest: Path,
    sha256: str | None = None,
    md5: str | None = None,
    timeout: float = 30,
    check: Callable[[Path], str | None] | None = None,
    bar: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` (resumable, verified); skip the network if already there.

    ``check`` describes what is wrong with a finished download (or returns None), for files
    without a published checksum; a file that fails it is deleted, never renamed into place.
    """
    dest = Path(dest)
    if dest.is_file() and _mismatch(dest, sha256, md5) is None:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_suffix(dest.suffix + ".part")
    try:
        _stream(url, part, timeout, bar)
    except requests.RequestException as e:
        raise DownloadError(f"Could not download {url}: {e}. {_manual_hint(dest)}") from e
    problem = _mismatch(part, sha256, md5)
    if problem:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"Checksum mismatch for {url}: {problem}. The partial file was deleted; retry, "
            f"or check the URL. {_manual_hint(dest)}"
        )
    problem = check(part) if check else None
    if problem:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"{url} gave a corrupt {dest.name}: {problem}. It was deleted; run again to "
            f"retry. {_manual_hint(dest)}"
        )
    os.replace(part, dest)
    return dest


def _check_members(zf: zipfile.ZipFile, archive: Path) -> None:
    """Refuse members that would land outside the extraction folder (zip-slip)."""
    for name in zf.namelist():
        p = PurePosixPath(name.replace("\\", "/"))
        if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]):
            raise DownloadError(f"Refusing to extract {archive}: unsafe member path {name!r}.")


def _complete(folder: Path, ds: RemoteDataset) -> bool:
    """Every class folder there (under each split folder, for datasets with splits)."""
    return all((folder / s / c).is_dir() for s in ds.splits or ("",) for c in ds.classes)


def _extract(archive: Path, target: Path, ds: RemoteDataset) -> None:
    """Unpack into a hidden sibling folder, then rename the class folder into ``target``."""
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=target.parent))
    try:
        try:
            with zipfile.ZipFile(archive) as zf:
                _check_members(zf, archive)
                if ds.sha256 is None and ds.md5 is None and zf.testzip() is not None:
                    raise zipfile.BadZipFile("a member fails its CRC check")
                # macOS resource forks (__MACOSX/) are no data
                zf.extractall(tmp, [n for n in zf.namelist() if not n.startswith("__MACOSX/")])
        except zipfile.BadZipFile as e:
            raise DownloadError(
                f"{archive} is not a valid zip archive ({e}); delete it and run again."
            ) from e
        # Accept archives that unpack to ``<folder>/<class>/`` or straight to ``<class>/``.
        found = tmp / ds.folder if _complete(tmp / ds.folder, ds) else tmp
        if not _complete(found, ds):
            where = f" under each of {list(ds.splits)}" if ds.splits else ""
            raise DownloadError(
                f"{archive} does not contain the expected class folders {list(ds.classes)}{where}."
            )
        try:
            os.replace(found, target)
        except OSError as e:
            if not _complete(target, ds):  # not a concurrent run that finished first
                raise DownloadError(f"{target} exists but is incomplete; remove it.") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def download_dataset(name: str, root: Path | None = None, url: str | None = None) -> Path:
    """Fetch and unpack a registered dataset; return its folder.

    Data lands in ``<root>/<name>/<folder>``: ``malaria/cell_images`` (``Parasitized/``,
    ``Uninfected/``), ``kermany/chest_xray`` (``train/`` and ``test/``, each with ``NORMAL/``
    and ``PNEUMONIA/``), ``covid/covid-chestxray-dataset`` (``metadata.csv``, ``images/``);
    archives are kept next to it. ``root`` defaults to :func:`cache_dir`. ``url`` replaces the
    registry URL (mirrors, tests; for ``covid`` the base URL that ``metadata.csv`` and
    ``images/`` hang off); the registry checksum still applies. A second call finds the folder
    and does no network access.
    """
    if name not in DATASETS:
        raise DownloadError(f"Unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}.")
    ds = DATASETS[name]
    base = (Path(root) if root is not None else cache_dir()) / ds.name
    target = base / ds.folder
    if isinstance(ds, RemoteCollection):
        return _download_collection(ds, base, url or ds.url)
    if _complete(target, ds):
        return target
    archive = fetch(url or ds.url, base / ds.filename, sha256=ds.sha256, md5=ds.md5)
    _extract(archive, target, ds)
    return target


def resolve_data(path: str | Path) -> Path:
    """``path`` made absolute; a registered dataset's name that is no local path is that
    dataset's folder, downloaded into the cache on first use (``--data kermany``)."""
    local = Path(path).expanduser().resolve()
    if not local.exists() and str(path) in DATASETS:
        return download_dataset(str(path))
    return local


def companion(data: str | Path, beside: str, name: str) -> Path:
    """A second dataset a recipe needs: ``<data>/../<beside>`` when that folder exists, else
    the registered dataset ``name`` (downloaded on first use). The lung crop finds the ieee8023
    images, and the covid curation its Kermany normals, this way."""
    sibling = resolve_data(data).parent / beside
    return sibling if sibling.is_dir() else download_dataset(name)


def _collection_complete(folder: Path, ds: RemoteCollection) -> bool:
    return (folder / ds.sheet).is_file() and (folder / ds.images).is_dir()


def _download_collection(ds: RemoteCollection, base: Path, url: str) -> Path:
    """The sheet, then every image it lists, into ``.<folder>.part/``; renamed when all are in."""
    from medsight.data.io import read_image

    target = base / ds.folder
    if _collection_complete(target, ds):
        return target
    staging = base / f".{ds.folder}.part"
    url = url if url.endswith("/") else url + "/"
    listed = _check(lambda p: _listed_images(p, ds.images))
    sheet = fetch(url + ds.sheet, staging / ds.sheet, sha256=ds.sheet_sha256, check=listed)
    names = _listed_images(sheet, ds.images)
    (staging / ds.images).mkdir(parents=True, exist_ok=True)
    with Progress(len(names), f"download {ds.name} images", unit="file") as shown:
        for file in names:
            dest = staging / ds.images / file
            fetch(
                url + f"{quote(ds.images)}/{quote(file)}", dest, check=_check(read_image), bar=False
            )
            shown.update()
    try:
        os.replace(staging, target)
    except OSError as e:
        if not _collection_complete(target, ds):
            raise DownloadError(f"{target} exists but is incomplete; remove it.") from e
    return target


def _check(read: Callable[[Path], object]) -> Callable[[Path], str | None]:
    """A :func:`fetch` check made of a reader that raises DataError for a bad file."""

    def problem(path: Path) -> str | None:
        try:
            read(path)
        except DataError as e:
            return str(e).removeprefix(f"{path}: ")
        return None

    return problem


def _listed_images(sheet: Path, folder: str) -> list[str]:
    """The distinct file names of the sheet's rows in ``folder``; refuses names with a path."""
    from medsight.data.curate import read_metadata

    rows = read_metadata(sheet)
    names = list(dict.fromkeys(rows.loc[rows["folder"] == folder, "filename"]))
    for name in names:
        if not name or name.startswith(".") or "/" in name or "\\" in name:
            raise DataError(f"{sheet}: unsafe image file name {name!r}")
    if not names:
        raise DataError(f"{sheet}: lists no images in {folder}/")
    return names


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
