"""Tests for medsight.data.io: real PNG/JPEG/npz files, DICOM written here, broken files."""

from __future__ import annotations

import hashlib
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from medsight.data.io import (
    content_sha256,
    is_image_file,
    load_image,
    npz_entry,
    read_image,
    split_npz_entry,
    to_pixels,
)
from medsight.errors import UnreadableImageError


def _first(folder: Path, pattern: str) -> Path:
    files = sorted(folder.glob(pattern))
    if not files:
        pytest.skip(f"no {pattern} under {folder}")
    return files[0]


@pytest.fixture(scope="module")
def malaria_png(datasets_dir: Path) -> Path:
    return _first(datasets_dir / "malaria" / "Parasitized", "*.png")


@pytest.fixture(scope="module")
def xray_jpeg(datasets_dir: Path) -> Path:
    return _first(datasets_dir / "chest_xray" / "test" / "NORMAL", "*.jpeg")


@pytest.fixture(scope="module")
def pneumonia_npz(datasets_dir: Path) -> Path:
    path = datasets_dir / "medmnist" / "varun19424_pneumonia_mnist" / "pneumoniamnist.npz"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that claims width x height but holds almost no data (a decompression bomb)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(tag + data))
        return struct.pack(">I", len(data)) + tag + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grayscale
    idat = zlib.compress(b"\0" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat))
    return path


def _write_dicom(
    path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", **attrs: object
) -> Path:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    bits = 8 if pixels.dtype == np.uint8 else 12
    ds.set_pixel_data(pixels, photometric, bits, generate_instance_uid=False)
    for name, value in attrs.items():
        setattr(ds, name, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def _gradient(rows: int = 16, cols: int = 32, top: int = 4000) -> np.ndarray:
    """16-bit ramp along the columns: 0 in column 0, `top` in the last column."""
    ramp = np.linspace(0, top, cols).round().astype(np.uint16)
    return np.tile(ramp, (rows, 1))


@pytest.mark.parametrize(
    ("name", "expected"),
    [("a.png", True), ("b.JPEG", True), ("c.tif", True), ("d.dicom", True), ("e.DCM", True)]
    + [("f.txt", False), ("g.npz", False), ("noext", False), ("h.png.bak", False)],
)
def test_is_image_file(name: str, expected: bool) -> None:
    assert is_image_file(name) is expected


def test_npz_entry_round_trip_and_plain_paths() -> None:
    entry = npz_entry("/data/pneumoniamnist.npz", "test_images", 5)
    assert entry == "/data/pneumoniamnist.npz::test_images/5"
    assert split_npz_entry(entry) == (Path("/data/pneumoniamnist.npz"), "test_images", 5)
    assert split_npz_entry("/data/x.png") is None
    assert split_npz_entry("/data/x.npz::test_images/five") is None
    assert split_npz_entry("/data/x.png::test_images/5") is None
    with pytest.raises(ValueError):
        npz_entry("/data/x.npz", "a", -1)


def test_read_real_malaria_png(malaria_png: Path) -> None:
    img = read_image(malaria_png)
    with Image.open(malaria_png) as raw:
        assert img.size == raw.size
        expected = np.asarray(raw.convert("RGB"))
    assert img.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(img), expected)


def test_read_real_xray_jpeg(xray_jpeg: Path) -> None:
    img = read_image(str(xray_jpeg))
    assert img.mode in ("L", "RGB")
    assert img.size == (224, 224)
    assert np.asarray(img).std() > 5  # decoded content, not a blank image


def test_load_image_resizes_to_height_width(malaria_png: Path) -> None:
    arr = load_image(malaria_png, size=(40, 60))
    assert arr.shape == (40, 60, 3)
    assert arr.dtype == np.uint8
    gray = load_image(malaria_png, size=(32, 32), channels=1)
    assert gray.shape == (32, 32, 1)
    native = load_image(malaria_png, size=None)
    assert native.shape[:2] == read_image(malaria_png).size[::-1]
    with pytest.raises(ValueError):
        load_image(malaria_png, size=None, channels=2)


def test_jpeg_draft_decodes_small_and_matches_full_decode(xray_jpeg: Path) -> None:
    assert read_image(xray_jpeg, draft_size=(56, 56)).size == (56, 56)  # 224 / 4
    arr = load_image(xray_jpeg, size=(56, 56))
    full = read_image(xray_jpeg).convert("RGB").resize((56, 56), Image.Resampling.BILINEAR)
    assert arr.shape == (56, 56, 3)
    diff = np.abs(arr.astype(np.int16) - np.asarray(full, dtype=np.int16))
    assert diff.mean() < 8


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(UnreadableImageError, match="No such file") as info:
        read_image(tmp_path / "nope.png")
    assert info.value.path == str(tmp_path / "nope.png")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(UnreadableImageError, match=r"empty file \(0 bytes\)") as info:
        read_image(empty)
    assert str(empty) in str(info.value)


def test_truncated_jpeg(tmp_path: Path, xray_jpeg: Path) -> None:
    data = xray_jpeg.read_bytes()
    broken = tmp_path / "broken.jpeg"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableImageError, match="truncated or corrupt") as info:
        load_image(broken, size=(32, 32))
    assert info.value.path == str(broken)


def test_text_file_named_png(tmp_path: Path) -> None:
    fake = tmp_path / "notes.png"
    fake.write_text("this is not an image\n")
    with pytest.raises(UnreadableImageError, match="unrecognised content") as info:
        read_image(fake)
    assert info.value.path == str(fake)


def test_max_pixels_on_real_image(malaria_png: Path) -> None:
    with pytest.raises(UnreadableImageError, match="exceeds the limit of 100 "):
        read_image(malaria_png, max_pixels=100)


def test_bomb_guard_checks_header_before_decoding(tmp_path: Path) -> None:
    # The IDAT is far too short: decoding would report "truncated", the guard must come first.
    bomb = _png_header_only(tmp_path / "bomb.png", 5000, 5000)
    with pytest.raises(UnreadableImageError, match="25000000 pixels exceeds the limit of 1000000"):
        read_image(bomb, max_pixels=1_000_000)


@pytest.mark.parametrize("side", [10_000, 30_000])  # Pillow's warning and its error
def test_pillow_bomb_check_becomes_unreadable(tmp_path: Path, side: int) -> None:
    bomb = _png_header_only(tmp_path / "bomb.png", side, side)
    filters_before = list(warnings.filters)
    with pytest.raises(UnreadableImageError, match="decompression-bomb") as info:
        read_image(bomb)
    assert info.value.path == str(bomb)
    assert warnings.filters == filters_before


def test_dicom_16bit_gradient_min_max_to_8bit(tmp_path: Path) -> None:
    path = _write_dicom(tmp_path / "ramp.dcm", _gradient())
    arr = np.asarray(read_image(path))
    assert read_image(path).mode == "L"
    assert arr.dtype == np.uint8 and arr.shape == (16, 32)
    assert arr[:, 0].max() == 0 and arr[:, -1].min() == 255
    assert np.all(np.diff(arr[0].astype(int)) >= 0)
    assert 120 <= arr[0, 16] <= 136  # linear in between


def test_dicom_monochrome1_is_inverted(tmp_path: Path) -> None:
    path = _write_dicom(tmp_path / "mono1.dcm", _gradient(), photometric="MONOCHROME1")
    arr = np.asarray(read_image(path))
    assert arr[0, -1] == 0  # brightest stored value becomes darkest
    assert arr[0, 0] == 255


def test_dicom_voi_window_clips(tmp_path: Path) -> None:
    path = _write_dicom(
        tmp_path / "window.dcm", _gradient(top=3100), WindowCenter=1000, WindowWidth=500
    )
    arr = np.asarray(read_image(path))
    ramp = _gradient(top=3100)[0]
    assert np.all(arr[0][ramp <= 700] == 0)
    assert np.all(arr[0][ramp >= 1300] == 255)
    inside = arr[0][(ramp > 800) & (ramp < 1200)]
    assert inside.size and 0 < inside.min() and inside.max() < 255


def test_dicom_window_applies_after_rescale(tmp_path: Path) -> None:
    # CT-like: stored 1024 is 0 HU after the intercept; a window centred on 0 HU shows it grey.
    pixels = np.full((8, 8), 1024, dtype=np.uint16)
    pixels[0, 0], pixels[0, 1] = 0, 4000
    path = _write_dicom(
        tmp_path / "ct.dcm",
        pixels,
        RescaleSlope=1,
        RescaleIntercept=-1024,
        WindowCenter=0,
        WindowWidth=400,
    )
    arr = np.asarray(read_image(path))
    assert arr[0, 0] == 0 and arr[0, 1] == 255
    assert 120 <= arr[4, 4] <= 136


def test_dicom_detected_by_magic_without_suffix(tmp_path: Path) -> None:
    path = _write_dicom(tmp_path / "IM000123", _gradient())
    assert not is_image_file(path)
    arr = np.asarray(read_image(path))
    assert arr.shape == (16, 32) and arr[0, 0] == 0 and arr[0, -1] == 255


def test_dicom_multiframe_takes_first_frame_and_rgb(tmp_path: Path) -> None:
    frames = np.stack([_gradient(), _gradient()[:, ::-1].copy()])
    arr = np.asarray(read_image(_write_dicom(tmp_path / "multi.dcm", frames)))
    assert arr.shape == (16, 32) and arr[0, 0] == 0 and arr[0, -1] == 255
    rgb = np.zeros((4, 6, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    img = read_image(_write_dicom(tmp_path / "rgb.dcm", rgb, photometric="RGB"))
    assert img.mode == "RGB" and img.size == (6, 4)
    assert np.asarray(img)[0, 0].tolist() == [200, 0, 0]


def test_dicom_pixel_guard_and_missing_pixels(tmp_path: Path) -> None:
    path = _write_dicom(tmp_path / "ramp.dcm", _gradient())
    with pytest.raises(UnreadableImageError, match="512 pixels exceeds the limit of 100 "):
        read_image(path, max_pixels=100)
    bare = tmp_path / "bare.dcm"
    bare.write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 20)
    with pytest.raises(UnreadableImageError) as info:
        read_image(bare)
    assert info.value.path == str(bare)


def test_read_real_npz_entry(pneumonia_npz: Path) -> None:
    with np.load(pneumonia_npz) as npz:
        expected = npz["test_images"][5]
    img = read_image(npz_entry(pneumonia_npz, "test_images", 5))
    assert img.mode == "L" and img.size == (28, 28)
    np.testing.assert_array_equal(np.asarray(img), expected)
    arr = load_image(npz_entry(pneumonia_npz, "test_images", 5), size=None, channels=1)
    assert arr.shape == (28, 28, 1)
    np.testing.assert_array_equal(arr[:, :, 0], expected)
    assert load_image(npz_entry(pneumonia_npz, "val_images", 0), size=(56, 56)).shape == (
        56,
        56,
        3,
    )


def test_npz_entry_errors(pneumonia_npz: Path) -> None:
    with pytest.raises(UnreadableImageError, match="out of range"):
        read_image(npz_entry(pneumonia_npz, "test_images", 10**6))
    with pytest.raises(UnreadableImageError, match="no array named"):
        read_image(npz_entry(pneumonia_npz, "nope_images", 0))


def test_content_sha256_of_npz_entries(pneumonia_npz: Path, tmp_path: Path) -> None:
    with np.load(pneumonia_npz) as npz:
        images = npz["test_images"]
    entry = npz_entry(pneumonia_npz, "test_images", 5)
    assert content_sha256(entry) == hashlib.sha256(images[5].tobytes()).hexdigest()
    assert content_sha256(entry) != content_sha256(npz_entry(pneumonia_npz, "test_images", 6))
    dup = tmp_path / "dup.npz"
    np.savez(dup, train_images=images[[1, 2]], test_images=images[[2]])
    assert content_sha256(npz_entry(dup, "train_images", 1)) == content_sha256(
        npz_entry(dup, "test_images", 0)
    )


def test_content_sha256_of_file(malaria_png: Path, tmp_path: Path) -> None:
    assert content_sha256(malaria_png) == hashlib.sha256(malaria_png.read_bytes()).hexdigest()
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * 9000)  # > 1 MiB: spans several chunks
    assert content_sha256(str(big)) == hashlib.sha256(big.read_bytes()).hexdigest()
    with pytest.raises(UnreadableImageError, match="No such file"):
        content_sha256(tmp_path / "missing.png")


def _mode_image(mode: str) -> Image.Image:
    ramp = np.tile(np.linspace(0, 1, 32), (8, 1))
    if mode == "I;16":
        return Image.fromarray((ramp * 60000 + 1000).astype(np.uint16))
    if mode == "F":
        return Image.fromarray((ramp * 3.5 - 1.0).astype(np.float32))
    return Image.fromarray((ramp * 255).astype(np.uint8)).convert(mode)


@pytest.mark.parametrize(
    ("mode", "suffix", "expected"),
    [("I;16", ".png", "L"), ("F", ".tif", "L"), ("1", ".bmp", "L"), ("LA", ".png", "L")]
    + [("RGBA", ".png", "RGB"), ("P", ".png", "RGB"), ("CMYK", ".jpg", "RGB")],
)
def test_pillow_modes_become_l_or_rgb(
    tmp_path: Path, mode: str, suffix: str, expected: str
) -> None:
    path = tmp_path / f"img{suffix}"
    _mode_image(mode).save(path)
    img = read_image(path)
    assert img.mode == expected and img.size == (32, 8)
    row = np.asarray(img.convert("L"), dtype=int)[4]
    assert row[0] <= 5 and row[-1] >= 250  # full range kept: 16-bit/float stretched by min-max
    if mode != "1":  # a 1-bit image is dithered, not a ramp
        assert np.all(np.diff(row) >= -3)


def test_to_pixels_without_resize_cannot_write_into_the_image(xray_jpeg: Path) -> None:
    """Without a resize or a mode change no Pillow copy is made: the array must still not
    alias the decoded image (read-only, or the caller's own copy)."""
    img = read_image(xray_jpeg)
    before = np.asarray(img).copy()
    pixels = to_pixels(img, (img.height, img.width), 3)
    np.testing.assert_array_equal(pixels, before)
    if pixels.flags.writeable:
        pixels[:] = 0
    else:
        with pytest.raises(ValueError, match="read-only"):
            pixels[:] = 0
    np.testing.assert_array_equal(np.asarray(img), before)
    np.testing.assert_array_equal(to_pixels(img.convert("L"), None, 3)[..., 0], img.convert("L"))
