"""Decoded-size limits, checked from the header before any pixel exists, for every reader."""

from __future__ import annotations

import struct
import tracemalloc
import zlib
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from medsight.data import io
from medsight.data.io import UNRECOGNISED, read_image, read_image_bytes
from medsight.data.limits import DEFAULT_MAX_DECODED_BYTES, pillow_bytes_per_pixel
from medsight.errors import UnreadableImageError


def _png_header(path: Path, width: int, height: int, bit_depth: int, color_type: int) -> Path:
    """A PNG that declares width x height pixels but holds almost no data."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body + chunk(b"IEND", b""))
    return path


def _element(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    """One explicit-VR little-endian data element."""
    if vr in (b"OB", b"OW"):
        return struct.pack("<HH2sHI", group, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


def _deflated_dicom(pixel_bytes: int, rows: int = 64, cols: int = 64) -> bytes:
    """A deflated DICOM file whose pixel data inflates to ``pixel_bytes`` zero bytes (streamed:
    the inflated data never exists here either)."""
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    head = BytesIO()
    head.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(head, meta, enforce_standard=True)
    u16 = lambda n: struct.pack("<H", n)  # noqa: E731
    dataset = b"".join(
        [
            _element(0x0028, 0x0002, b"US", u16(1)),
            _element(0x0028, 0x0004, b"CS", b"MONOCHROME2 "),
            _element(0x0028, 0x0010, b"US", u16(rows)),
            _element(0x0028, 0x0011, b"US", u16(cols)),
            _element(0x0028, 0x0100, b"US", u16(16)),
            _element(0x0028, 0x0101, b"US", u16(12)),
            _element(0x0028, 0x0102, b"US", u16(11)),
            _element(0x0028, 0x0103, b"US", u16(0)),
            struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, pixel_bytes),
        ]
    )
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [head.getvalue(), deflater.compress(dataset)]
    zeros, left = bytes(1 << 20), pixel_bytes
    while left:
        parts.append(deflater.compress(zeros[: min(left, len(zeros))]))
        left -= min(left, len(zeros))
    parts.append(deflater.flush())
    return b"".join(parts)


@pytest.mark.parametrize(
    ("mode", "expected"), [("1", 1), ("L", 1), ("P", 1), ("I;16", 2), ("LA", 4), ("RGB", 4)]
)
def test_pillow_bytes_per_pixel(mode: str, expected: int) -> None:
    assert pillow_bytes_per_pixel(mode) == expected


def test_16bit_png_bomb_is_refused_from_its_header(tmp_path: Path) -> None:
    bomb = _png_header(tmp_path / "bomb.png", 9000, 9000, bit_depth=16, color_type=0)
    assert bomb.stat().st_size < 1000
    with pytest.raises(UnreadableImageError, match="81000000 pixels exceeds the limit of 40000000"):
        read_image(bomb)
    with pytest.raises(UnreadableImageError, match="81000000 pixels exceeds"):
        read_image_bytes(bomb.read_bytes())


def test_decoded_bytes_limit_counts_bytes_per_sample(tmp_path: Path) -> None:
    gray16 = _png_header(tmp_path / "g16.png", 3000, 3000, bit_depth=16, color_type=0)
    rgb8 = _png_header(tmp_path / "rgb.png", 3000, 3000, bit_depth=8, color_type=2)
    gray8 = _png_header(tmp_path / "g8.png", 3000, 3000, bit_depth=8, color_type=0)
    limit = 16 * 2**20
    with pytest.raises(UnreadableImageError, match="3000x3000 pixels of 2 bytes decode to 17 MB"):
        read_image(gray16, max_bytes=limit)
    with pytest.raises(UnreadableImageError, match="of 4 bytes decode to 34 MB, over the limit"):
        read_image(rgb8, max_bytes=limit)
    with pytest.raises(UnreadableImageError, match="truncated or corrupt"):
        read_image(gray8, max_bytes=limit)  # 9 MB: within the limit, so it is decoded (and short)


def test_deflated_dicom_bomb_is_refused_without_inflating_it(tmp_path: Path) -> None:
    data = _deflated_dicom(DEFAULT_MAX_DECODED_BYTES + 64 * 2**20)  # 320 MB of zeros
    assert len(data) < 2 * 2**20
    path = tmp_path / "bomb.dcm"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        with pytest.raises(UnreadableImageError, match="deflated DICOM data inflates to more than"):
            read_image(path)
        with pytest.raises(UnreadableImageError, match="deflated DICOM data inflates"):
            read_image_bytes(data)
        with pytest.raises(UnreadableImageError, match="deflated DICOM data inflates"):
            read_image_bytes(data[132:])  # no preamble: sniffed as a raw dataset, inflated first
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * 2**20  # pydicom would have held the whole 320 MB


def test_small_deflated_dicom_still_reads(tmp_path: Path) -> None:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ramp = np.tile(np.arange(0, 4000, 125, dtype=np.uint16), (16, 1))
    ds.set_pixel_data(ramp, "MONOCHROME2", 12, generate_instance_uid=False)
    path = tmp_path / "small.dcm"
    ds.save_as(path, enforce_file_format=True)
    img = read_image(path)
    assert img.size == (32, 16)
    assert np.asarray(img)[0, 0] == 0 and np.asarray(img)[0, -1] == 255


def test_the_format_comes_from_the_content_for_files_as_for_uploads(tmp_path: Path) -> None:
    pixels = np.full((8, 8, 3), 120, np.uint8)
    gif = tmp_path / "cell.png"
    Image.fromarray(pixels).save(gif, format="GIF")
    with pytest.raises(UnreadableImageError, match="unrecognised content") as info:
        read_image(gif)
    assert info.value.path == str(gif)
    assert UNRECOGNISED in str(info.value)
    jpeg = tmp_path / "named-wrongly.png"
    Image.fromarray(pixels).save(jpeg, format="JPEG", quality=95)
    assert read_image(jpeg).size == (8, 8)  # a JPEG is accepted whatever its name


def test_16bit_conversion_a_block_at_a_time_is_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    values = np.random.default_rng(0).integers(0, 65535, (37, 53), dtype=np.uint16)
    lo, hi = float(values.min()), float(values.max())
    whole = np.clip(np.rint((values.astype(np.float64) - lo) * (255.0 / (hi - lo))), 0, 255)
    monkeypatch.setattr(io, "_CONVERT_CHUNK", 7)
    assert np.array_equal(io._to_uint8(values), whole.astype(np.uint8))
