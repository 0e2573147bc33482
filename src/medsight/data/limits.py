"""How big an image may be once decoded, decided from its header before any pixel exists.

A 158 KB 16-bit PNG can declare 9000 x 9000 pixels (162 MB decoded, ~1 GB while converted), and a
1 MB deflated DICOM can inflate to 1 GiB inside pydicom before any check runs. Every reader
(training, predict, serve) checks two limits first: the pixel count and the decoded bytes of the
one frame it decodes (width x height x bytes per sample). A deflated DICOM is inflated
incrementally, without keeping the output, and refused once it passes the byte limit.
"""

from __future__ import annotations

import zlib
from typing import IO, TYPE_CHECKING

from medsight.errors import UnreadableImageError

if TYPE_CHECKING:
    from pydicom import Dataset

DEFAULT_MAX_PIXELS = 40_000_000  # a 6,300 x 6,300 image: above any radiograph we know of
DEFAULT_MAX_DECODED_BYTES = 256 * 2**20
DEFLATED_DICOM = "1.2.840.10008.1.2.1.99"
_DICOM_HEADER_SLACK = 16 * 2**20  # the non-pixel elements of a deflated dataset


def pillow_bytes_per_pixel(mode: str) -> int:
    """Bytes Pillow holds per pixel of ``mode``: one for 1/L/P, two for 16-bit, else four (it
    keeps LA, RGB and the other multi-band modes in 32-bit pixels)."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


def dicom_bytes_per_pixel(ds: Dataset) -> int:
    """Decoded bytes per pixel of a frame, from SamplesPerPixel and BitsAllocated."""
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    bits = int(ds.get("BitsAllocated", 8) or 8)
    return samples * -(-bits // 8)


def check_decoded_size(
    path: str, width: int, height: int, bytes_per_pixel: int, max_pixels: int, max_bytes: int
) -> None:
    """Refuse an image whose header declares more pixels or decoded bytes than allowed."""
    pixels = width * height
    if pixels > max_pixels:
        reason = f"{pixels} pixels exceeds the limit of {max_pixels} (decompression-bomb guard)"
        raise UnreadableImageError(path, reason)
    decoded = pixels * bytes_per_pixel
    if decoded > max_bytes:
        reason = (
            f"{width}x{height} pixels of {bytes_per_pixel} bytes decode to {_mb(decoded)}, over "
            f"the limit of {_mb(max_bytes)} (decompression-bomb guard)"
        )
        raise UnreadableImageError(path, reason)


def check_deflated_dicom(path: str, source: IO[bytes], max_bytes: int) -> None:
    """For a DICOM file in the deflated transfer syntax, refuse it if its dataset inflates to
    more than ``max_bytes`` plus room for the non-pixel elements; other files pass untouched.
    ``source`` is read from its start and left at its start."""
    from pydicom.filereader import _read_file_meta_info, read_preamble

    try:
        source.seek(0)
        read_preamble(source, force=True)
        meta = _read_file_meta_info(source)
        deflated = str(meta.get("TransferSyntaxUID", "")) == DEFLATED_DICOM
        if deflated and _inflates_beyond(source, max_bytes + _DICOM_HEADER_SLACK):
            reason = (
                f"deflated DICOM data inflates to more than {_mb(max_bytes)} "
                "(decompression-bomb guard)"
            )
            raise UnreadableImageError(path, reason)
    except UnreadableImageError:
        raise
    except Exception:  # a malformed header: pydicom's own reading reports it
        pass
    finally:
        source.seek(0)


def _inflates_beyond(source: IO[bytes], cap: int) -> bool:
    """Whether the raw deflate stream from here on inflates past ``cap`` bytes (read a MiB at a
    time, output dropped as it comes, so memory stays at a few MiB whatever the ratio)."""
    inflater, total = zlib.decompressobj(-zlib.MAX_WBITS), 0
    while chunk := source.read(1 << 20):
        while chunk:
            try:
                total += len(inflater.decompress(chunk, 1 << 20))
            except zlib.error:
                return False  # corrupt: pydicom's own reading reports it
            if total > cap:
                return True
            chunk = inflater.unconsumed_tail
    return False


def _mb(n: int) -> str:
    return f"{n / 2**20:.0f} MB"
