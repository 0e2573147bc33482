"""Read PNG/JPEG/BMP/TIFF, DICOM and npz entries as 8-bit L/RGB; every failure is an
UnreadableImageError naming the path, so a scan skips bad files instead of a run crashing."""

from __future__ import annotations

import functools
import hashlib
import os
import warnings
from contextlib import nullcontext
from io import BytesIO
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from medsight.data.limits import (
    DEFAULT_MAX_DECODED_BYTES,
    DEFAULT_MAX_PIXELS,
    check_decoded_size,
    check_deflated_dicom,
    dicom_bytes_per_pixel,
    pillow_bytes_per_pixel,
)
from medsight.errors import DataError, UnreadableImageError

if TYPE_CHECKING:
    from pydicom import Dataset

DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}) | DICOM_SUFFIXES
NPZ_SEPARATOR = "::"
# Content sniffing for bytes without a trustworthy name: magic bytes -> the one Pillow plugin
# allowed to decode them (never Pillow's other plugins, e.g. EPS through Ghostscript).
_PILLOW_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}
_CONVERT_CHUNK = 1 << 22  # pixels; a whole 40-megapixel image in float64 would be 320 MB
UNRECOGNISED = "not a PNG, JPEG, BMP, TIFF or DICOM image (unrecognised content)"


def is_image_file(path: str | Path) -> bool:
    """Tell by suffix alone, so folder scans stay cheap (files without suffix are skipped)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def find_images(paths: list[str | Path]) -> list[str]:
    """Absolute paths of image files: given files as they are (any suffix, e.g. DICOM without
    one), folders searched recursively by suffix; sorted, without duplicates."""
    found: set[str] = set()
    for given in map(Path, paths):
        if given.is_dir():
            found.update(os.path.abspath(p) for p in given.rglob("*") if is_image_file(p))
        elif given.is_file():
            found.add(os.path.abspath(given))
        else:
            raise DataError(f"{given}: no such file or folder")
    if not found:
        raise DataError(f"no image files found in {', '.join(map(str, paths))}")
    return sorted(found)


def npz_entry(npz_path: str | Path, key: str, index: int) -> str:
    """Name one array element as a path, so npz datasets flow through path-based code."""
    if NPZ_SEPARATOR in key or index < 0:
        raise ValueError(f"invalid npz entry: key={key!r} index={index}")
    return f"{npz_path}{NPZ_SEPARATOR}{key}/{index}"


def split_npz_entry(path: str | Path) -> tuple[Path, str, int] | None:
    """Parse `file.npz::key/index`; None for an ordinary file path."""
    file_part, sep, entry = str(path).rpartition(NPZ_SEPARATOR)
    if not sep or not file_part.lower().endswith(".npz"):
        return None
    key, slash, index = entry.rpartition("/")
    if not slash or not key or not index.isdigit():
        return None
    return Path(file_part), key, int(index)


def read_image(
    path: str | Path,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    *,
    draft_size: tuple[int, int] | None = None,
    max_bytes: int = DEFAULT_MAX_DECODED_BYTES,
) -> Image.Image:
    """Return a loaded image in mode "L" or "RGB". `draft_size`: the (height, width) the caller
    will resize to; JPEGs then decode at the smallest 1/2-1/8 scale still at least that big.
    The format comes from the content (as for uploads), never from the suffix alone."""
    name, entry = str(path), split_npz_entry(path)
    limits = (max_pixels, max_bytes)
    if entry is not None:
        return _array_to_image(name, _npz_element(name, *entry), *limits)
    try:  # read the head first: clear reasons for missing/empty files, and DICOM magic
        with open(name, "rb") as f:
            head = f.read(132)
    except OSError as exc:
        raise UnreadableImageError(name, _os_reason(exc)) from exc
    if not head:
        raise UnreadableImageError(name, "empty file (0 bytes)")
    if Path(name).suffix.lower() in DICOM_SUFFIXES or head[128:132] == b"DICM":
        return _read_dicom(name, limits)
    fmt = _pillow_format(head)
    if fmt is None:
        raise UnreadableImageError(name, UNRECOGNISED)
    return _read_pillow(name, limits, draft_size, formats=(fmt,))


def read_image_bytes(
    data: bytes,
    name: str = "upload",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    *,
    draft_size: tuple[int, int] | None = None,
    max_bytes: int = DEFAULT_MAX_DECODED_BYTES,
) -> Image.Image:
    """Like :func:`read_image`, for bytes held in memory (an upload). The format is sniffed
    from the content, never taken from ``name`` (which only labels errors): PNG, JPEG, BMP and
    TIFF by their magic bytes, DICOM by "DICM" at offset 128 or as a preamble-less dataset."""
    if not data:
        raise UnreadableImageError(name, "empty file (0 bytes)")
    limits = (max_pixels, max_bytes)
    if data[128:132] == b"DICM":
        return _read_dicom(name, limits, BytesIO(data))
    if (fmt := _pillow_format(data)) is not None:
        return _read_pillow(name, limits, draft_size, BytesIO(data), (fmt,))
    if _is_raw_dicom(data, name, max_bytes):
        return _read_dicom(name, limits, BytesIO(data))
    raise UnreadableImageError(name, UNRECOGNISED)


def image_from(
    source: str | os.PathLike | bytes | Image.Image | np.ndarray,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    *,
    draft_size: tuple[int, int] | None = None,
    max_bytes: int = DEFAULT_MAX_DECODED_BYTES,
) -> Image.Image:
    """Whatever image a Python caller holds (a path, encoded PNG/JPEG/DICOM bytes, a PIL image
    or an (H, W) / (H, W, 1 or 3) array) as an L or RGB image, through the same checks as a
    file: non-uint8 arrays and 16-bit images are stretched onto 0..255 as DICOM pixels are."""
    if isinstance(source, bytes | bytearray | memoryview):
        return read_image_bytes(
            bytes(source), "bytes", max_pixels, draft_size=draft_size, max_bytes=max_bytes
        )
    if isinstance(source, Image.Image):
        mode_bytes = pillow_bytes_per_pixel(source.mode)
        check_decoded_size(
            "PIL image", source.width, source.height, mode_bytes, max_pixels, max_bytes
        )
        return _normalize_mode(source)
    if isinstance(source, np.ndarray):
        return _array_to_image("array", source, max_pixels, max_bytes)
    if isinstance(source, str | os.PathLike):
        return read_image(source, max_pixels, draft_size=draft_size, max_bytes=max_bytes)
    raise TypeError(
        f"cannot read an image from a {type(source).__name__}: give a path, bytes, a PIL image "
        "or a numpy array"
    )


def _pillow_format(head: bytes) -> str | None:
    """The one Pillow plugin allowed to decode content starting with ``head``, if any."""
    return next((fmt for magic, fmt in _PILLOW_MAGIC.items() if head.startswith(magic)), None)


def load_image(
    path: str | Path,
    size: tuple[int, int] | None,
    channels: int = 3,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Return a uint8 array (H, W, channels), resized to size=(height, width) when given."""
    return to_pixels(read_image(path, max_pixels, draft_size=size), size, channels)


def to_pixels(img: Image.Image, size: tuple[int, int] | None, channels: int = 3) -> np.ndarray:
    """A decoded image as the uint8 (H, W, channels) array a model sees: one resize rule for
    training and serving, so their preprocessing cannot drift."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if img.mode != (mode := "L" if channels == 1 else "RGB"):
        img = img.convert(mode)  # in the same mode it would only copy: asarray copies anyway
    if size is not None and img.size != (size[1], size[0]):
        img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR, reducing_gap=3.0)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


def content_sha256(path: str | Path) -> str:
    """Hash the content, so identical images under different names are found as duplicates."""
    if (entry := split_npz_entry(path)) is not None:
        element = _npz_element(str(path), *entry)
        return hashlib.sha256(np.ascontiguousarray(element).tobytes()).hexdigest()
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        raise UnreadableImageError(str(path), _os_reason(exc)) from exc
    return digest.hexdigest()


def _os_reason(exc: OSError) -> str:
    return f"cannot read file: {exc.strerror or exc}"  # e.g. "No such file or directory"


def _to_uint8(arr: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Linearly map [lo, hi] (default: the image's own min/max) onto 0..255."""
    arr = np.asarray(arr)
    lo = float(np.nanmin(arr)) if lo is None else lo
    hi = float(np.nanmax(arr)) if hi is None else hi
    out = np.zeros(arr.shape, dtype=np.uint8)
    if not hi > lo:  # constant image (or all NaN): nothing to stretch
        return out
    flat, dest, scale = arr.reshape(-1), out.reshape(-1), 255.0 / (hi - lo)
    for start in range(0, flat.size, _CONVERT_CHUNK):  # float64 copies a block at a time
        block = np.asarray(flat[start : start + _CONVERT_CHUNK], dtype=np.float64)
        scaled = (np.nan_to_num(block, nan=lo) - lo) * scale
        dest[start : start + _CONVERT_CHUNK] = np.clip(np.rint(scaled), 0, 255)
    return out


def _normalize_mode(img: Image.Image) -> Image.Image:
    """Reduce Pillow's many modes to L or RGB without losing the visible content."""
    if img.mode in ("L", "RGB"):
        return img
    if img.mode in ("1", "LA", "La"):
        return img.convert("L")
    if img.mode.startswith("I") or img.mode == "F":  # 16/32-bit int or float grayscale
        return Image.fromarray(_to_uint8(np.asarray(img)))
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert("RGB")  # P, PA, RGBA (alpha dropped), CMYK, YCbCr, LAB, HSV


def _read_pillow(
    path: str,
    limits: tuple[int, int],
    draft_size: tuple[int, int] | None,
    source: IO[bytes] | None = None,
    formats: tuple[str, ...] | None = None,
) -> Image.Image:
    try:
        # Pillow's own bomb check warns in Image.open: an error here only, filters restored.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path if source is None else source, formats=formats) as img:
                size = (img.width, img.height, pillow_bytes_per_pixel(img.mode))
                check_decoded_size(path, *size, *limits)
                if draft_size is not None:
                    height, width = draft_size
                    if img.getexif().get(ExifTags.Base.Orientation) in (5, 6, 7, 8):
                        height, width = width, height  # stored rotated by 90 degrees
                    img.draft(None, (width, height))
                img.load()
                ImageOps.exif_transpose(img, in_place=True)
                return _normalize_mode(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UnreadableImageError(path, f"{exc} (decompression-bomb guard of Pillow)") from exc
    except UnidentifiedImageError as exc:
        raise UnreadableImageError(path, "not an image file (cannot identify format)") from exc
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        raise UnreadableImageError(path, f"truncated or corrupt image data: {exc}") from exc


def _is_raw_dicom(data: bytes, name: str, max_bytes: int) -> bool:
    """Whether pydicom reads ``data`` (forced) as a dataset with an image size: a DICOM file
    that lacks the 128-byte preamble and the "DICM" magic. A deflated one is refused first if it
    inflates too far: pydicom inflates the whole dataset even to read its header."""
    import pydicom

    check_deflated_dicom(name, BytesIO(data), max_bytes)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # garbage read as DICOM warns about every element
            ds = pydicom.dcmread(BytesIO(data), force=True, stop_before_pixels=True)
            return "Rows" in ds and "Columns" in ds
    except Exception:  # pydicom raises many types for data that is no DICOM at all
        return False


def _read_dicom(path: str, limits: tuple[int, int], source: IO[bytes] | None = None) -> Image.Image:
    import pydicom  # deferred: only DICOM datasets pay for the import
    from pydicom.pixels import apply_color_lut, apply_modality_lut, pixel_array

    try:  # force: a .dcm file may lack the 128-byte preamble and the "DICM" magic
        with open(path, "rb") if source is None else nullcontext(source) as stream:
            check_deflated_dicom(path, stream, limits[1])
            ds = pydicom.dcmread(stream, force=True)
    except UnreadableImageError:
        raise
    except Exception as exc:  # pydicom raises many types for malformed files
        raise UnreadableImageError(path, f"corrupt DICOM file: {exc}") from exc
    if "PixelData" not in ds or "Rows" not in ds or "Columns" not in ds:
        raise UnreadableImageError(path, "not a DICOM image (no pixel data found)")
    size = (int(ds.Columns), int(ds.Rows), dicom_bytes_per_pixel(ds))
    check_decoded_size(path, *size, *limits)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    try:
        frame = pixel_array(ds, index=0)  # multi-frame: decode only the first frame
        if photometric == "PALETTE COLOR":
            rgb = apply_color_lut(frame, ds)
            return Image.fromarray(_to_uint8(rgb, 0, np.iinfo(rgb.dtype).max))
        if frame.ndim == 3:  # RGB, or YBR already converted to RGB by pydicom
            top = 2 ** int(ds.get("BitsStored", 8)) - 1
            return Image.fromarray(_to_uint8(frame[..., :3], 0, top))
        gray = _apply_voi(apply_modality_lut(frame, ds), ds)
    except Exception as exc:  # missing decoder plugin, bad LUT, wrong pixel length, ...
        raise UnreadableImageError(path, f"cannot decode DICOM pixel data: {exc}") from exc
    if photometric == "MONOCHROME1":  # low values are white: flip to the usual convention
        gray = 255 - gray
    return Image.fromarray(gray)


def _apply_voi(values: np.ndarray, ds: Dataset) -> np.ndarray:
    """Apply the VOI LUT or window and scale its whole output range (not the image's) to 8 bit,
    so that clipped values really become 0 and 255; without VOI, use the image's min-max."""
    from pydicom.pixels import apply_voi, apply_windowing

    seq = ds.get("VOILUTSequence")
    if seq and "LUTDescriptor" in seq[0] and "LUTData" in seq[0]:
        entries, first, _ = seq[0].LUTDescriptor
        voi, probe = apply_voi, np.arange(first, first + (entries or 65536))  # every LUT entry
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        voi, probe = apply_windowing, np.array([-np.inf, np.inf])  # -> (y_min, y_max)
    else:
        return _to_uint8(values)
    out_range = voi(probe, ds)
    return _to_uint8(voi(values, ds), float(out_range.min()), float(out_range.max()))


@functools.lru_cache(maxsize=4)
def _npz_array(npz_path: str, key: str, _mtime_ns: int, _size: int) -> np.ndarray:
    """Load one whole array once; mtime/size in the key drop stale entries if the file changes."""
    with np.load(npz_path, allow_pickle=False) as npz:
        arr = npz[key]
    arr.flags.writeable = False
    return arr


def _npz_element(path: str, npz_path: Path, key: str, index: int) -> np.ndarray:
    try:
        stat = os.stat(npz_path)
        arr = _npz_array(str(npz_path), key, stat.st_mtime_ns, stat.st_size)
    except OSError as exc:
        raise UnreadableImageError(path, _os_reason(exc)) from exc
    except KeyError as exc:
        raise UnreadableImageError(path, f"npz file has no array named {key!r}") from exc
    except Exception as exc:  # not a zip, pickled objects, truncated archive, ...
        raise UnreadableImageError(path, f"not a readable npz file: {exc}") from exc
    if arr.ndim < 1 or index >= arr.shape[0]:
        raise UnreadableImageError(path, f"index {index} out of range for {key!r} {arr.shape}")
    return arr[index]


def _array_to_image(path: str, element: np.ndarray, max_pixels: int, max_bytes: int) -> Image.Image:
    """MedMNIST stores (H, W) grayscale or (H, W, 3) RGB uint8 arrays."""
    if element.ndim == 3 and element.shape[2] == 1:
        element = element[:, :, 0]
    if not (element.ndim == 2 or (element.ndim == 3 and element.shape[2] == 3)):
        raise UnreadableImageError(path, f"array element of shape {element.shape} is no image")
    height, width = element.shape[:2]
    bytes_per_pixel = element.itemsize * (3 if element.ndim == 3 else 1)
    check_decoded_size(path, width, height, bytes_per_pixel, max_pixels, max_bytes)
    if element.dtype != np.uint8:
        element = _to_uint8(element)
    return Image.fromarray(np.ascontiguousarray(element))
