"""read_image_bytes: uploads decoded by their content (never their name), exactly like files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import SecondaryCaptureImageStorage, generate_uid

from medsight.data.io import load_image, read_image, read_image_bytes, to_pixels
from medsight.errors import UnreadableImageError


@pytest.fixture(scope="module")
def xray(chest_xray_dir: Path) -> Path:
    files = sorted((chest_xray_dir / "test" / "NORMAL").glob("*.jpeg"))
    if not files:
        pytest.skip(f"no X-rays under {chest_xray_dir / 'test' / 'NORMAL'}")
    return files[0]


def _dicom_bytes(pixels: np.ndarray, preamble: bool) -> bytes:
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.set_pixel_data(pixels, "MONOCHROME2", 8, generate_instance_uid=False)
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = io.BytesIO()
    ds.save_as(buffer, implicit_vr=False, little_endian=True, enforce_file_format=preamble)
    return buffer.getvalue()


def test_jpeg_bytes_decode_like_the_file(xray: Path, tmp_path: Path):
    from_bytes = read_image_bytes(xray.read_bytes(), "scan.dcm", draft_size=(64, 64))
    assert np.array_equal(to_pixels(from_bytes, (64, 64), 3), load_image(xray, (64, 64), 3))
    assert np.array_equal(read_image_bytes(xray.read_bytes()), read_image(xray))
    cut = xray.read_bytes()[:2000]
    (tmp_path / "cut.jpeg").write_bytes(cut)
    with pytest.raises(UnreadableImageError, match="truncated") as from_bytes:
        read_image_bytes(cut)
    with pytest.raises(UnreadableImageError) as from_file:
        read_image(tmp_path / "cut.jpeg")
    assert from_bytes.value.reason == from_file.value.reason


def test_png_bytes(xray: Path):
    buffer = io.BytesIO()
    Image.open(xray).convert("L").save(buffer, "PNG")
    decoded = read_image_bytes(buffer.getvalue(), "named.jpeg")
    assert decoded.mode == "L" and np.array_equal(decoded, Image.open(xray).convert("L"))


@pytest.mark.parametrize("preamble", [True, False], ids=["with-preamble", "without-preamble"])
def test_dicom_bytes_decode_like_the_file(xray: Path, tmp_path: Path, preamble: bool):
    data = _dicom_bytes(np.asarray(Image.open(xray).convert("L")), preamble)
    assert (data[128:132] == b"DICM") is preamble
    (tmp_path / "x.dcm").write_bytes(data)
    decoded = read_image_bytes(data, "upload.png")  # the name is ignored: content decides
    assert decoded.mode == "L" and np.array_equal(decoded, read_image(tmp_path / "x.dcm"))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"name,label\nx.png,NORMAL\n" * 10, "unrecognised content"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "unrecognised content"),
        (b"GIF89a" + b"\0" * 64, "unrecognised content"),  # a real format, but not accepted
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "cannot identify format"),
        (b"\xff\xd8\xff\xe0" + b"\0" * 40, "cannot identify format|truncated or corrupt"),
    ],
    ids=["empty", "csv-text", "postscript", "gif", "png-magic-only", "jpeg-magic-only"],
)
def test_unreadable_bytes_name_the_reason(data: bytes, reason: str):
    with pytest.raises(UnreadableImageError, match=reason) as caught:
        read_image_bytes(data, "upload")
    assert caught.value.path == "upload"
