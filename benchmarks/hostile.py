"""Hostile requests for ``medsight serve``: a seeded table of cases, each with its category, the
bytes it puts on the wire and the answer it must get.

    from benchmarks.hostile import hostile_cases
    cases = hostile_cases(seed=0)  # >= 1,000 cases, the same ones for the same seed

A case is either an HTTP request (method, target, headers, body) or raw bytes for a socket
(malformed HTTP). ``expect`` is ``"4xx"`` (refused, with the JSON ``{"error", "detail"}`` body)
or ``"2xx"`` (valid but odd: a 16-bit PNG, a traversal file name on a real image). ``bomb``
marks an upload that would cost far more memory to decode than its size: answering it 2xx is a
failure. ``secrets`` are strings of the request (file names, query-string keys, DICOM patient
fields) that must never come back in an answer nor reach the server's log. The images are made
here from seeded pixels (``real`` adds files of a data set), so the table needs nothing else.
"""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from io import BytesIO

import numpy as np
from PIL import Image

CATEGORIES = {
    "zero_bytes": "empty files, fields and bodies",
    "random_bytes": "random bytes, some behind a PNG/JPEG/TIFF/DICOM magic",
    "truncated": "valid PNG, JPEG and DICOM files cut at a random point",
    "pixel_bomb": "PNG, JPEG, BMP, TIFF and DICOM headers claiming huge images",
    "dicom_bomb": "deflated DICOM of ~1 MB inflating to 1 GiB",
    "unaccepted_format": "GIF, WebP, PDF, EPS, SVG, ... named .png/.jpeg/.dcm",
    "content_type": "JSON, text, urlencoded or raw bodies instead of multipart",
    "malformed_multipart": "no/wrong boundary, no closing boundary, missing or doubled fields",
    "file_name": "traversal, NUL, control, very long and unicode file names on valid images",
    "oversized": "uploads over 50 MiB, with and without Content-Length",
    "invalid_http": "bad Content-Length, header lines without colon, headers over 64 KiB",
    "stalled": "a request that never arrives whole (answered at the request deadline)",
    "url": "fake secrets in query strings, control and escape bytes in the path",
    "explain_fields": "bad and odd method/target fields of /v1/explain",
    "patient_name": "valid images with patient-like file names and DICOM patient fields",
    "valid": "valid images of several formats, sizes and modes",
    "routing": "unknown routes and wrong methods",
}
BOUNDARY = "medsightfuzz7d1c0b3a"
OVERSIZE = 51 * 2**20  # bytes of padding: over the server's 50 MiB upload limit
_UID = "1.2.826.0.1.3680043.8.498."  # a fixed UID root: the same DICOM bytes for the same seed


@dataclass(frozen=True)
class Case:
    """One hostile request. ``body`` pieces: bytes, or an int for that many zero bytes (sent a
    MiB at a time, never held). ``raw``: the whole request, sent as it is."""

    category: str
    name: str
    method: str = "POST"
    target: str = "/v1/predict"
    headers: tuple[tuple[str, str], ...] = ()
    body: tuple[bytes | int, ...] = ()
    raw: bytes | None = None
    chunked: bool = False
    expect: str = "4xx"
    bomb: bool = False
    secrets: tuple[str, ...] = ()
    stall: bool = False  # sends less than it declares, then waits for the answer

    @property
    def length(self) -> int:
        return sum(p if isinstance(p, int) else len(p) for p in self.body)

    @property
    def route(self) -> str:
        return self.target.split("?", 1)[0]

    def wire(self, host: str = "127.0.0.1") -> Iterator[bytes]:
        """The request's bytes, in pieces of at most a few MiB."""
        if self.raw is not None:
            yield self.raw
            return
        head = [f"{self.method} {self.target} HTTP/1.1", f"Host: {host}", "Connection: close"]
        head += [f"{k}: {v}" for k, v in self.headers]
        names = {k.lower() for k, _ in self.headers}
        if self.chunked:
            head.append("Transfer-Encoding: chunked")
        elif "content-length" not in names:
            head.append(f"Content-Length: {self.length}")
        yield ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        for piece in self.body:
            for data in _pieces(piece):
                yield f"{len(data):x}\r\n".encode() + data + b"\r\n" if self.chunked else data
        if self.chunked:
            yield b"0\r\n\r\n"


def _pieces(piece: bytes | int) -> Iterator[bytes]:
    if isinstance(piece, bytes):
        yield piece
        return
    zeros = bytes(1 << 20)
    for start in range(0, piece, len(zeros)):
        yield zeros[: min(len(zeros), piece - start)]


def form(*parts: tuple[str | bytes, str | bytes | None, bytes], boundary: str = BOUNDARY) -> bytes:
    """A multipart/form-data body: (field name, file name or None, data) per part; names may be
    raw bytes (NUL, control characters) as a hostile client sends them."""

    def b(text: str | bytes) -> bytes:
        return text if isinstance(text, bytes) else text.encode("utf-8")

    out = []
    for name, filename, data in parts:
        disposition = b'Content-Disposition: form-data; name="' + b(name) + b'"'
        if filename is not None:
            disposition += b'; filename="' + b(filename) + b'"'
            disposition += b"\r\nContent-Type: application/octet-stream"
        out.append(b"--" + boundary.encode() + b"\r\n" + disposition + b"\r\n\r\n" + data + b"\r\n")
    return b"".join(out) + b"--" + boundary.encode() + b"--\r\n"


MULTIPART = (("Content-Type", f"multipart/form-data; boundary={BOUNDARY}"),)


def upload(
    category: str,
    name: str,
    data: bytes,
    filename: str | bytes = "image.png",
    route: str = "/v1/predict",
    fields: Sequence[tuple[str, bytes]] = (),
    **case: object,
) -> Case:
    """A well-formed upload of ``data`` as the ``file`` field, plus text ``fields``."""
    body = form(("file", filename, data), *((k, None, v) for k, v in fields))
    return Case(category, name, target=route, headers=MULTIPART, body=(body,), **case)  # type: ignore[arg-type]


# ---- images -------------------------------------------------------------------------------


def _pixels(rng: np.random.Generator, height: int, width: int, bands: int) -> np.ndarray:
    """A smooth blob with a little noise (compresses like a photograph, not like noise)."""
    y, x = np.mgrid[0:height, 0:width]
    cy, cx = rng.uniform(0.3, 0.7, 2) * (height, width)
    blob = np.exp(-(((y - cy) / (height / 3)) ** 2 + ((x - cx) / (width / 3)) ** 2))
    base = np.stack([blob * rng.uniform(120, 230) for _ in range(bands)], axis=-1)
    return np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)


def _encode(img: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = BytesIO()
    img.save(buffer, fmt, **options)
    return buffer.getvalue()


def _dicom(pixels: np.ndarray, number: int, bits: int = 8, deflated: bool = False, **attrs: str):
    from pydicom.dataset import Dataset
    from pydicom.uid import DeflatedExplicitVRLittleEndian, SecondaryCaptureImageStorage

    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = f"{_UID}{number}"
    photometric = "RGB" if pixels.ndim == 3 else "MONOCHROME2"
    ds.set_pixel_data(pixels, photometric, bits, generate_instance_uid=False)
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for key, value in attrs.items():
        setattr(ds, key, value)
    buffer = BytesIO()
    if deflated:
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        ds.save_as(buffer, enforce_file_format=True)
    else:
        ds.save_as(buffer, implicit_vr=False, little_endian=True, enforce_file_format=True)
    return buffer.getvalue()


def valid_images(seed: int = 0) -> list[tuple[str, bytes]]:
    """(description, bytes) of valid images the server should classify: several formats,
    sizes and modes."""
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(_pixels(rng, 150, 140, 3))
    grey = Image.fromarray(_pixels(rng, 96, 96, 1)[..., 0])
    deep = Image.fromarray(_pixels(rng, 200, 180, 1)[..., 0].astype(np.uint16) * 257)
    rgba = Image.fromarray(np.dstack([_pixels(rng, 90, 100, 3), _pixels(rng, 90, 100, 1)]))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees
    return [
        ("png-rgb", _encode(rgb, "PNG")),
        ("png-grey", _encode(grey, "PNG")),
        ("png-grey-alpha", _encode(grey.convert("LA"), "PNG")),
        ("png-rgba", _encode(rgba, "PNG")),
        ("png-palette", _encode(rgb.convert("P"), "PNG")),
        ("png-16bit", _encode(deep, "PNG")),
        ("png-1bit", _encode(grey.convert("1"), "PNG")),
        ("png-interlaced", _encode(rgb, "PNG", interlace=1)),
        ("png-1x1", _encode(Image.new("RGB", (1, 1), (200, 30, 60)), "PNG")),
        ("png-3000x4", _encode(rgb.resize((3000, 4)), "PNG")),
        ("png-large-1500x1500", _encode(rgb.resize((1500, 1500)), "PNG", compress_level=1)),
        ("jpeg-rgb", _encode(rgb, "JPEG", quality=90)),
        ("jpeg-grey", _encode(grey, "JPEG")),
        ("jpeg-progressive", _encode(rgb, "JPEG", progressive=True)),
        ("jpeg-cmyk", _encode(rgb.convert("CMYK"), "JPEG")),
        ("jpeg-exif-rotated", _encode(rgb, "JPEG", exif=exif)),
        ("bmp-rgb", _encode(rgb, "BMP")),
        ("tiff-rgb", _encode(rgb, "TIFF")),
        ("tiff-deflate", _encode(grey, "TIFF", compression="tiff_adobe_deflate")),
        ("dicom-8bit", _dicom(np.asarray(grey), 1)),
        ("dicom-16bit", _dicom(np.asarray(deep, dtype=np.uint16) >> 4, 2, bits=16)),
        ("dicom-rgb", _dicom(np.asarray(rgb), 3)),
        ("dicom-deflated-small", _dicom(np.asarray(grey), 4, deflated=True)),
        ("dicom-no-preamble", _dicom(np.asarray(grey), 5)[132:]),
    ]


# ---- bombs --------------------------------------------------------------------------------


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def png_claiming(width: int, height: int, bit_depth: int = 1, color_type: int = 0) -> bytes:
    """A PNG whose header claims width x height pixels, with almost no data behind it."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def _repeated_deflate(head: bytes, block: bytes, count: int) -> bytes:
    """A raw deflate stream of ``head`` then ``count`` copies of ``block``, built from one
    compressed copy (a full flush resets the history, so every copy compresses the same)."""
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    first = deflater.compress(head) + deflater.flush(zlib.Z_FULL_FLUSH)
    again = deflater.compress(block) + deflater.flush(zlib.Z_FULL_FLUSH)
    return first + again * count + deflater.flush()


def png_16bit_bomb(width: int = 9000, height: int = 9000) -> bytes:
    """A real 16-bit greyscale PNG of width x height black pixels (162 MB decoded at 9000 x
    9000) whose zlib stream is ~160 KB: valid all through, so only a header check stops it."""
    row = b"\0" * (1 + 2 * width)  # filter byte, then the samples
    rows_per_block = max(1, (1 << 20) // len(row))
    blocks, rest = divmod(height, rows_per_block)
    adler = zlib.adler32(row * rest)
    for _ in range(blocks):
        adler = zlib.adler32(row * rows_per_block, adler)
    stream = _repeated_deflate(row * rest, row * rows_per_block, blocks)
    idat = b"\x78\xda" + stream + struct.pack(">I", adler)
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def jpeg_claiming(jpeg: bytes, width: int, height: int) -> bytes:
    """``jpeg`` with the size in its start-of-frame segment replaced."""
    for marker in (b"\xff\xc0", b"\xff\xc1", b"\xff\xc2"):
        at = jpeg.find(marker)
        if at >= 0:
            return jpeg[: at + 5] + struct.pack(">HH", height, width) + jpeg[at + 9 :]
    raise ValueError("no start-of-frame segment")


def bmp_claiming(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + 16, 0, 0, 54) + info + b"\0" * 16


def tiff_claiming(width: int, height: int) -> bytes:
    entries = [
        (256, 4, width),  # ImageWidth, LONG
        (257, 4, height),  # ImageLength
        (258, 3, 8),  # BitsPerSample, SHORT
        (259, 3, 1),  # no compression
        (262, 3, 1),  # BlackIsZero
        (273, 4, 8 + 2 + 12 * 9 + 4),  # StripOffsets: just after the IFD
        (277, 3, 1),  # SamplesPerPixel
        (278, 4, height),  # RowsPerStrip
        (279, 4, 16),  # StripByteCounts
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        ifd += struct.pack("<HHII", tag, kind, 1, value)
    return b"II*\0" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + b"\0" * 16


def _element(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    """One explicit-VR little-endian data element."""
    if vr in (b"OB", b"OW"):
        return struct.pack("<HH2sHI", group, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


def _image_elements(rows: int, cols: int, samples: int, bits: int, pixel_length: int) -> bytes:
    u16 = lambda n: struct.pack("<H", n)  # noqa: E731
    photometric = b"RGB " if samples == 3 else b"MONOCHROME2 "
    return b"".join(
        [
            _element(0x0028, 0x0002, b"US", u16(samples)),
            _element(0x0028, 0x0004, b"CS", photometric),
            _element(0x0028, 0x0006, b"US", u16(0)) if samples > 1 else b"",
            _element(0x0028, 0x0010, b"US", u16(rows)),
            _element(0x0028, 0x0011, b"US", u16(cols)),
            _element(0x0028, 0x0100, b"US", u16(bits)),
            _element(0x0028, 0x0101, b"US", u16(bits)),
            _element(0x0028, 0x0102, b"US", u16(bits - 1)),
            _element(0x0028, 0x0103, b"US", u16(0)),
            struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, pixel_length),
        ]
    )


def _dicom_meta(transfer_syntax: str) -> bytes:
    from pydicom.dataset import FileMetaDataset
    from pydicom.filewriter import write_file_meta_info
    from pydicom.uid import SecondaryCaptureImageStorage

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = transfer_syntax
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = f"{_UID}99"
    buffer = BytesIO()
    buffer.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(buffer, meta, enforce_standard=True)
    return buffer.getvalue()


def dicom_claiming(rows: int, cols: int, samples: int = 1, bits: int = 16) -> bytes:
    """An uncompressed DICOM whose header claims rows x cols x samples of ``bits``, with 64
    bytes of pixel data."""
    from pydicom.uid import ExplicitVRLittleEndian

    pixels = _image_elements(rows, cols, samples, bits, 64)
    return _dicom_meta(ExplicitVRLittleEndian) + pixels + b"\0" * 64


def deflated_dicom_bomb(inflated: int = 2**30, rows: int = 16384, cols: int = 16384) -> bytes:
    """A Deflated Explicit VR Little Endian DICOM of ~1 MB whose dataset inflates to
    ``inflated`` bytes of pixel data (zeros) under a rows x cols 16-bit header."""
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    elements = _image_elements(rows, cols, 1, 16, inflated)
    mib, rest = divmod(inflated, 1 << 20)
    stream = _repeated_deflate(elements + bytes(rest), bytes(1 << 20), mib)
    return _dicom_meta(DeflatedExplicitVRLittleEndian) + stream


def bombs(jpeg: bytes) -> list[tuple[str, bytes]]:
    """(description, bytes) of the pixel bombs: each claims more than 40 megapixels or more
    than 256 MB decoded in its header."""
    return [
        ("png-100000x100000-1bit", png_claiming(100_000, 100_000)),
        ("png-100000x100000-rgba", png_claiming(100_000, 100_000, 8, 6)),
        ("png-65535x65535-rgb16", png_claiming(65_535, 65_535, 16, 2)),
        ("png-8000x6000-grey", png_claiming(8000, 6000, 8, 0)),
        ("png-1x2147483647", png_claiming(1, 2**31 - 1)),
        ("png-16bit-9000x9000-real", png_16bit_bomb()),
        ("jpeg-65500x65500-sof", jpeg_claiming(jpeg, 65_500, 65_500)),
        ("jpeg-65535x1000-sof", jpeg_claiming(jpeg, 65_535, 1000)),
        ("bmp-100000x100000", bmp_claiming(100_000, 100_000)),
        ("bmp-100000x-100000-topdown", bmp_claiming(100_000, -100_000)),
        ("tiff-100000x100000", tiff_claiming(100_000, 100_000)),
        ("dicom-60000x60000", dicom_claiming(60_000, 60_000)),
        ("dicom-6000x6000x3x32bit-432MB", dicom_claiming(6000, 6000, samples=3, bits=32)),
        ("dicom-60000x60000-no-preamble", dicom_claiming(60_000, 60_000)[132:]),
    ]


# ---- other content ------------------------------------------------------------------------

OTHER_FORMATS = [
    ("gif", _encode(Image.new("P", (32, 32), 3), "GIF")),
    ("webp", _encode(Image.new("RGB", (32, 32), (9, 9, 9)), "WEBP")),
    ("ppm", _encode(Image.new("RGB", (32, 32)), "PPM")),
    ("ico", _encode(Image.new("RGB", (32, 32)), "ICO")),
    ("tga", _encode(Image.new("RGB", (32, 32)), "TGA")),
    ("pdf", b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"),
    ("eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\nshowpage\n"),
    ("svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>'),
    ("html", b"<html><script>alert(1)</script></html>"),
    ("jp2", b"\0\0\0\x0cjP  \r\n\x87\n" + b"\0" * 64),
    ("psd", b"8BPS\0\x01" + b"\0" * 64),
    ("zip", b"PK\x03\x04" + b"\0" * 64),
    ("gzip", zlib.compress(b"x" * 1000)),
    ("elf", b"\x7fELF\x02\x01\x01" + b"\0" * 64),
    ("text", b"just some notes, not an image\n" * 20),
]


def _truncated(rng: random.Random, sources: list[tuple[str, bytes]], count: int) -> list[Case]:
    """Valid files cut at a random point before their last 10 % (where a decoder still has
    pixels to read, so a cut file is never whole by luck)."""
    cases = []
    for i in range(count):
        label, data = sources[i % len(sources)]
        cut = rng.randrange(0, int(len(data) * 0.9))
        route = "/v1/explain" if i % 5 == 4 else "/v1/predict"
        cases.append(
            upload("truncated", f"{label}-cut-{cut}-of-{len(data)}", data[:cut], route=route)
        )
    return cases


def _random_bytes(rng: random.Random, count: int) -> list[Case]:
    magics = [b"", b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"II*\x00", b"MM\x00*"]
    cases = []
    for i in range(count):
        size = int(2 ** rng.uniform(0, 18))
        data = rng.randbytes(size)
        magic = magics[i % len(magics)]
        if i % 7 == 6:
            data = bytes(128) + b"DICM" + data
        elif magic:
            data = magic + data
        elif data[:2] in (b"BM", b"\xff\xd8", b"\x89P", b"II", b"MM"):
            data = b"\0" + data  # a random start that happens to be a real magic
        route = "/v1/explain" if i % 6 == 5 else "/v1/predict"
        cases.append(upload("random_bytes", f"random-{i}-{len(data)}b", data, "noise.png", route))
    return cases


def _zero_bytes(png: bytes) -> list[Case]:
    empty_part = form(("file", "empty.png", b""))
    return [
        *(upload("zero_bytes", f"empty-file-{r}", b"", route=r) for r in _ROUTES),
        upload("zero_bytes", "empty-file-named-dcm", b"", "empty.dcm"),
        upload("zero_bytes", "empty-file-no-name", b"", "", fields=[("file2", png)]),
        Case("zero_bytes", "empty-body-multipart", headers=MULTIPART),
        Case("zero_bytes", "empty-body-no-type"),
        Case("zero_bytes", "empty-body-explain", target="/v1/explain", headers=MULTIPART),
        Case("zero_bytes", "only-closing-boundary", headers=MULTIPART, body=(empty_part[-26:],)),
    ]


_ROUTES = ("/v1/predict", "/v1/explain")


def _content_types(png: bytes) -> list[Case]:
    kinds = [
        ("json", "application/json", b'{"file": "xray.jpeg"}'),
        ("text", "text/plain", b"file=xray.jpeg"),
        ("urlencoded", "application/x-www-form-urlencoded", b"file=%89PNG"),
        ("raw-png", "image/png", png),
        ("octet-stream", "application/octet-stream", png),
        ("multipart-mixed", f"multipart/mixed; boundary={BOUNDARY}", form(("file", "a.png", png))),
        ("xml", "application/xml", b"<file>x</file>"),
        ("garbage-type", "\x7f;;;=", png),
        ("no-type", None, png),
    ]
    cases = []
    for route in _ROUTES:
        for label, kind, body in kinds:
            headers = () if kind is None else (("Content-Type", kind),)
            cases.append(
                Case(
                    "content_type", f"{label}-{route}", target=route, headers=headers, body=(body,)
                )
            )
    return cases


def _multipart(png: bytes, junk: bytes) -> list[Case]:
    whole = form(("file", "a.png", png))
    cases: list[tuple[str, str, bytes, str]] = [  # label, content type, body, expect
        ("no-boundary", "multipart/form-data", whole, "4xx"),
        ("empty-boundary", "multipart/form-data; boundary=", whole, "4xx"),
        ("wrong-boundary", "multipart/form-data; boundary=notthisone", whole, "4xx"),
        ("no-closing-boundary", MULTIPART[0][1], whole[: -len(BOUNDARY) - 6], "4xx"),
        ("cut-in-half", MULTIPART[0][1], whole[: len(whole) // 2], "4xx"),
        ("no-file-field", MULTIPART[0][1], form(("image", "a.png", png)), "4xx"),
        ("text-field-only", MULTIPART[0][1], form(("method", None, b"gradcam")), "4xx"),
        ("file-field-as-text", MULTIPART[0][1], form(("file", None, b"not a file")), "4xx"),
        (
            "two-files-first-valid",
            MULTIPART[0][1],
            form(("file", "a.png", png), ("file", "b.png", junk)),
            "2xx",
        ),
        (
            "two-files-first-junk",
            MULTIPART[0][1],
            form(("file", "a.png", junk), ("file", "b.png", png)),
            "4xx",
        ),
        (
            "nine-parts",
            MULTIPART[0][1],
            form(*[(f"f{i}", None, b"x") for i in range(8)], ("file", "a.png", png)),
            "4xx",
        ),
        (
            "part-without-disposition",
            MULTIPART[0][1],
            f"--{BOUNDARY}\r\nContent-Type: image/png\r\n\r\n".encode()
            + png
            + f"\r\n--{BOUNDARY}--\r\n".encode(),
            "4xx",
        ),
        ("part-without-name", MULTIPART[0][1], whole.replace(b'name="file"; ', b""), "4xx"),
        (
            "part-header-without-colon",
            MULTIPART[0][1],
            whole.replace(b"Content-Type: application", b"Content-Type application"),
            "4xx",
        ),
        (
            "garbage-after-boundary",
            MULTIPART[0][1],
            whole.replace(f"--{BOUNDARY}\r\n".encode(), f"--{BOUNDARY}junk\r\n".encode(), 1),
            "4xx",
        ),
        ("bare-lf-lines", MULTIPART[0][1], whole.replace(b"\r\n", b"\n"), "4xx"),
        (
            "boundary-300-chars",
            "multipart/form-data; boundary=" + "b" * 300,
            form(("file", "a.png", png), boundary="b" * 300),
            "4xx",  # RFC 2046 allows 70; the parser takes up to 256
        ),
        ("quoted-boundary", f'multipart/form-data; boundary="{BOUNDARY}"', whole, "2xx"),
        (
            "preamble-before-first-boundary",
            MULTIPART[0][1],
            b"ignore this preamble\r\n" + whole,
            "4xx",  # RFC 2046 allows a preamble, python-multipart refuses one: a clean 400
        ),
        ("epilogue-after-closing", MULTIPART[0][1], whole + b"trailing epilogue bytes", "2xx"),
        (
            "part-header-8kib",
            MULTIPART[0][1],
            whole.replace(b"Content-Type: application/octet-stream", b"X-Pad: " + b"p" * 8192),
            "4xx",  # over python-multipart's part-header limit
        ),
    ]
    return [
        Case(
            "malformed_multipart",
            f"{label}-{route}",
            target=route,
            headers=(("Content-Type", kind),),
            body=(body,),
            expect=expect,
        )
        for route in _ROUTES
        for label, kind, body, expect in cases
    ]


def _file_names(png: bytes) -> list[Case]:
    names: list[tuple[str, bytes]] = [  # label, file name with the marker FNAMEMARK<n>
        ("traversal", b"../../etc/passwd/FNAMEMARK0.png"),
        ("traversal-deep", b"../" * 40 + b"FNAMEMARK1.png"),
        ("windows-traversal", b"..\\..\\Windows\\System32\\FNAMEMARK2.png"),
        ("absolute", b"/etc/shadow/FNAMEMARK3.png"),
        ("nul-byte", b"FNAMEMARK4.png\0.exe"),
        ("long-300", b"FNAMEMARK5" + b"a" * 300 + b".png"),
        ("long-20k", b"FNAMEMARK6" + b"b" * 20000 + b".png"),
        ("escape-sequence", b"\x1b[31mFNAMEMARK7\x1b[0m.png"),
        (
            "control-chars",
            b"FNAMEMARK8" + bytes(range(1, 32)).replace(b"\r", b"").replace(b"\n", b"") + b".png",
        ),
        ("unicode", "患者_FNAMEMARK9_Ölçü.png".encode()),
        ("rtl-override", "FNAMEMARK10\u202egnp.exe".encode()),
        ("emoji", "🩻FNAMEMARK11🩻.png".encode()),
        ("invalid-utf8", b"FNAMEMARK12\xff\xfe.png"),
        ("quote-in-name", b'FNAMEMARK13".png'),
        ("percent-encoded", b"%2e%2e%2fFNAMEMARK14.png"),
        ("html", b"<script>FNAMEMARK15</script>.png"),
        ("format-string", b"%s%n%x{0}FNAMEMARK16.png"),
        ("dicom-suffix", b"FNAMEMARK17.dcm"),
        ("no-suffix", b"FNAMEMARK18"),
        ("only-dots", b"FNAMEMARK19...."),
    ]
    cases = [
        upload(
            "file_name",
            f"{label}-{route}",
            png,
            name,
            route,
            expect="4xx" if label == "long-20k" else "2xx",  # a part header over the limit
            secrets=(f"FNAMEMARK{i}",),
        )
        for i, (label, name) in enumerate(names)
        for route in _ROUTES
    ]
    crlf = b"FNAMEMARK20.png\r\nX-Injected: FNAMEMARK21"  # ends the header: a part header more
    cases.append(
        upload(
            "file_name",
            "crlf-injection",
            png,
            crlf,
            expect="2xx",
            secrets=("FNAMEMARK20", "FNAMEMARK21"),
        )
    )
    return cases


def _oversized(png: bytes) -> list[Case]:
    head, tail = form(("file", "big.png", png)).split(b"\r\n--" + BOUNDARY.encode() + b"--")
    closing = b"\r\n--" + BOUNDARY.encode() + b"--\r\n"
    body = (head, OVERSIZE, closing)
    return [
        Case("oversized", "51MiB-content-length", headers=MULTIPART, body=body, bomb=True),
        Case("oversized", "51MiB-chunked", headers=MULTIPART, body=body, chunked=True, bomb=True),
        Case(
            "oversized",
            "declared-60MiB-sends-little",
            headers=(*MULTIPART, ("Content-Length", str(60 * 2**20))),
            body=(tail,),
            bomb=True,
        ),
    ]


def _raw(line: str, *headers: str, body: bytes = b"") -> bytes:
    lines = [line, "Host: 127.0.0.1", "Connection: close", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


def _invalid_http(png: bytes) -> list[Case]:
    whole = form(("file", "a.png", png))
    multipart = MULTIPART[0][0] + ": " + MULTIPART[0][1]
    post = "POST /v1/predict HTTP/1.1"
    raws: list[tuple[str, bytes]] = [
        (f"content-length-{label}", _raw(post, multipart, f"Content-Length: {value}", body=whole))
        for label, value in [
            ("letters", "abc"),
            ("negative", "-1"),
            ("fraction", "1.5"),
            ("hex", "0x10"),
            ("empty", ""),
            ("plus", "+5"),
            ("two-numbers", "5 5"),
            ("comma-list", "5, 6"),
            ("huge", "9" * 30),
            ("unicode-digits", "١٢"),
            ("space-padded", " 12 "),
        ]
    ]
    raws += [
        (
            "content-length-twice",
            _raw(post, multipart, "Content-Length: 5", f"Content-Length: {len(whole)}", body=whole),
        ),
        (
            "header-without-colon",
            _raw(
                post, multipart, "X-Broken header line", f"Content-Length: {len(whole)}", body=whole
            ),
        ),
        (
            "space-before-colon",
            _raw(post, multipart + " ", f"Content-Length : {len(whole)}", body=whole),
        ),
        ("header-name-with-nul", _raw(post, "X-A\0B: 1", body=b"")),
        ("header-value-with-nul", _raw(post, "X-A: 1\0 2", body=b"")),
        ("header-70kib", _raw(post, "X-Long: " + "h" * 70 * 1024, body=b"")),
        ("headers-2000x40b", _raw(post, *[f"X-H{i}: {'v' * 32}" for i in range(2000)], body=b"")),
        ("request-line-70kib", _raw("GET /" + "p" * 70 * 1024 + " HTTP/1.1")),
        (
            "obsolete-line-folding",
            _raw(
                post, multipart, " folded-continuation", f"Content-Length: {len(whole)}", body=whole
            ),
        ),
        ("no-http-version", b"GET /healthz\r\n\r\n"),
        ("http-9.9", _raw("GET /healthz HTTP/9.9")),
        ("http-0.9-style", b"GET /\r\n"),
        ("lowercase-method", _raw("get /healthz HTTP/1.1")),
        ("method-with-slash", _raw("PO/ST /v1/predict HTTP/1.1")),
        ("two-spaces-in-line", _raw("GET  /healthz HTTP/1.1")),
        ("no-host", b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n"),
        ("transfer-encoding-gzip", _raw(post, multipart, "Transfer-Encoding: gzip", body=whole)),
        (
            "chunked-bad-size",
            _raw(post, multipart, "Transfer-Encoding: chunked", body=b"zz\r\nabc\r\n0\r\n\r\n"),
        ),
        (
            "chunked-and-content-length",
            _raw(
                post,
                multipart,
                "Transfer-Encoding: chunked",
                "Content-Length: 3",
                body=b"3\r\nabc\r\n0\r\n\r\n",
            ),
        ),
        ("http2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        (
            "tls-client-hello",
            bytes.fromhex("16030100a5010000a10303") + bytes(range(32)) + b"\0" * 64,
        ),
        ("binary-garbage", bytes(range(256)) * 4 + b"\r\n\r\n"),
    ]
    stall = {"http-0.9-style", "tls-client-hello"}  # incomplete heads: answered at the deadline
    served = {"http-9.9"}  # h11 takes any one-digit version for 1.1
    return [
        Case(
            "invalid_http",
            label,
            raw=raw,
            stall=label in stall,
            expect="2xx" if label in served else "4xx",
        )
        for label, raw in raws
    ]


def _stalled() -> list[Case]:
    return [
        Case(
            "stalled",
            "body-never-arrives",
            headers=(*MULTIPART, ("Content-Length", "4096")),
            body=(b"--" + BOUNDARY.encode(),),
            stall=True,
        ),
        Case(
            "stalled",
            "headers-never-end",
            raw=b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nX-Wait: ",
            stall=True,
        ),
    ]


def _urls(png: bytes) -> list[Case]:
    secret_queries = [
        ("api-key", "?api_key=SECRET123", "SECRET123"),
        ("token-and-patient", "?token=SECRETTOKEN9&patient=DOE_JOHN_QS", "SECRETTOKEN9"),
        ("password", "?password=SECRETPW42&user=admin", "SECRETPW42"),
        ("bearer-fragment", "?access_token=SECRETBEARER7#frag", "SECRETBEARER7"),
    ]
    cases = []
    for label, query, secret in secret_queries:
        secrets = (secret, "DOE_JOHN_QS")
        for route in _ROUTES:
            cases.append(
                upload(
                    "url",
                    f"{label}-{route}",
                    png,
                    route=route + query,
                    expect="2xx",
                    secrets=secrets,
                )
            )
        cases.append(
            Case("url", f"{label}-model", "GET", "/v1/model" + query, expect="2xx", secrets=secrets)
        )
        cases.append(
            Case(
                "url", f"{label}-healthz", "GET", "/healthz" + query, expect="2xx", secrets=secrets
            )
        )
    # paths are logged (escaped) by design: what is checked is their raw control bytes, and
    # that an encoded CR LF cannot forge a log line of its own
    encoded = [
        ("escape-encoded", "/v1/%1b%5b31mred%1b%5b0m"),
        ("nul-encoded", "/v1/predict%00.png"),
        ("crlf-encoded", "/v1/x%0d%0aFORGED%20log%20line"),
        ("crlf-header-injection", "/v1/x%0d%0aSet-Cookie:%20FORGED=1"),
        ("traversal-encoded", "/%2e%2e/%2e%2e/etc/passwd"),
        ("double-slash", "//v1//predict"),
        ("long-8kib", "/v1/" + "x" * 8192),
        ("unicode-encoded", "/v1/%E6%82%A3%E8%80%85"),
    ]
    cases += [Case("url", label, "GET", path) for label, path in encoded]
    raw_paths = [
        ("raw-escape", b"/v1/\x1b[2J\x1b[31mred"),
        ("raw-nul", b"/v1/predict\x00.png"),
        ("raw-del", b"/v1/\x7f"),
        ("raw-crlf", b"/v1/x\r\nFORGED log line"),
        ("raw-high-bytes", "/v1/患者".encode()),
        ("raw-space", b"/v1/pre dict"),
    ]
    for label, path in raw_paths:
        raw = b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        cases.append(Case("url", label, raw=raw))
    return cases


def _explain_fields(png: bytes) -> list[Case]:
    bad = [
        ("target-superscript", [("target", "¹".encode())]),
        ("target-999", [("target", b"999")]),
        ("target-minus-1", [("target", b"-1")]),
        ("target-1e3", [("target", b"1e3")]),
        ("target-unknown-class", [("target", b"NOT_A_CLASS")]),
        ("target-escape", [("target", b"\x1b[31m")]),
        ("target-huge-digits", [("target", b"9" * 150)]),
        ("method-nope", [("method", b"nope")]),
        ("method-upper", [("method", b"GRADCAM")]),
        ("method-300-chars", [("method", b"g" * 300)]),
        ("method-invalid-utf8", [("method", b"\xff\xfe")]),
        ("method-nul", [("method", b"gradcam\0")]),
        ("method-and-target-bad", [("method", b"nope"), ("target", b"999")]),
    ]
    odd = [
        ("target-0", [("target", b"0")]),
        ("target-1", [("target", b"1")]),
        ("target-blank", [("target", b"   ")]),
        ("method-empty", [("method", b"")]),
        ("method-padded", [("method", b"  gradcam  ")]),
        ("method-eigencam", [("method", b"eigencam")]),
    ]
    cases = [
        upload("explain_fields", label, png, route="/v1/explain", fields=fields)
        for label, fields in bad
    ]
    cases += [
        upload("explain_fields", label, png, route="/v1/explain", fields=fields, expect="2xx")
        for label, fields in odd
    ]
    return cases


def _patient_names(images: list[tuple[str, bytes]], grey: np.ndarray) -> list[Case]:
    fields = {"PatientName": "Doe^Jane", "PatientID": "MRN-4711-X", "PatientBirthDate": "19610203"}
    dicom = _dicom(grey, 7, **fields)
    secrets = ("PATIENT_DOE_JOHN", "DOE_JOHN", "Doe^Jane", "MRN-4711", "19610203")
    names = ["PATIENT_DOE_JOHN.png", "PATIENT_DOE_JOHN_1961-02-03_MRN-4711.jpeg", "Doe^Jane.dcm"]
    cases = [
        upload(
            "patient_name",
            f"{label}-as-{name}-{route}",
            data,
            name,
            route,
            expect="2xx",
            secrets=secrets,
        )
        for label, data in images[:4] + [("dicom-with-patient-fields", dicom)]
        for name in names
        for route in _ROUTES
    ]
    return cases


def _routing() -> list[Case]:
    return [
        Case("routing", "get-predict", "GET", "/v1/predict"),
        Case("routing", "put-predict", "PUT", "/v1/predict"),
        Case("routing", "delete-model", "DELETE", "/v1/model"),
        Case("routing", "post-model", "POST", "/v1/model"),
        Case("routing", "post-healthz", "POST", "/healthz"),
        Case("routing", "unknown-v2", "GET", "/v2/predict"),
        Case("routing", "unknown-admin", "GET", "/admin"),
        Case("routing", "dotfile", "GET", "/.env"),
        Case("routing", "static-traversal", "GET", "/static/../../../etc/passwd"),
        Case("routing", "static-missing", "GET", "/static/nothing.js"),
        Case("routing", "trace", "TRACE", "/healthz"),
        Case("routing", "made-up-method", "BREW", "/v1/predict"),
    ]


def hostile_cases(seed: int = 0, real: Sequence[tuple[str, bytes]] = ()) -> list[Case]:
    """The hostile table (>= 1,000 cases over :data:`CATEGORIES`), the same for the same
    ``seed`` and ``real`` (optional (label, bytes) of real PNG/JPEG files, cut and sent too)."""
    rng = random.Random(seed)
    images = valid_images(seed) + list(real)
    named = dict(images)
    png, jpeg = named["png-rgb"], named["jpeg-rgb"]
    grey = np.asarray(Image.open(BytesIO(named["png-grey"])))
    junk = b"not an image at all\n" * 8
    cuttable = [(label, data) for label, data in images if len(data) > 2000]
    bomb_table = bombs(jpeg)
    dicom_bomb = deflated_dicom_bomb()
    dicom_bombs = [
        ("deflated-1GiB", dicom_bomb),
        ("deflated-1GiB-no-preamble", dicom_bomb[132:]),
        ("deflated-1GiB-small-header", deflated_dicom_bomb(rows=64, cols=64)),
    ]
    cases = [
        *_zero_bytes(png),
        *_random_bytes(rng, 300),
        *_truncated(rng, cuttable, 360),
        *[
            upload("pixel_bomb", f"{label}-as-{name}-{route}", data, name, route, bomb=True)
            for label, data in bomb_table
            for route in _ROUTES
            for name in ("bomb.png", "scan.dcm")
        ],
        *[
            upload("dicom_bomb", f"{label}-{route}", data, "scan.dcm", route, bomb=True)
            for label, data in dicom_bombs
            for route in _ROUTES
        ],
        *[
            upload("unaccepted_format", f"{label}-as-{name}-{route}", data, name, route)
            for label, data in OTHER_FORMATS
            for name in ("image.png", "image.jpeg", "image.dcm")
            for route in _ROUTES
        ],
        *_content_types(png),
        *_multipart(png, junk),
        *_file_names(png),
        *_oversized(png),
        *_invalid_http(png),
        *_stalled(),
        *_urls(png),
        *_explain_fields(png),
        *_patient_names(images, grey),
        *[
            upload("valid", f"{label}-{route}", data, f"image-{i}.png", route, expect="2xx")
            for i, (label, data) in enumerate(images)
            for route in _ROUTES
        ],
        *_routing(),
    ]
    return cases


def sample(cases: Sequence[Case], per_category: int) -> list[Case]:
    """``per_category`` cases of each category, spread over it (the same ones every time)."""
    chosen = []
    for category in CATEGORIES:
        members = [c for c in cases if c.category == category]
        step = max(1, len(members) // per_category)
        chosen += members[::step][:per_category]
    return chosen
