"""The hostile-request table (pure), the wire format and verdicts, and a tiny fuzz benchmark
against a real ``medsight serve`` on a tiny bundle."""

from __future__ import annotations

import json
import struct
import zlib
from io import BytesIO
from pathlib import Path

import h11
import pydicom
import pytest
from PIL import Image

from benchmarks import fuzz_serving
from benchmarks.fuzz_serving import Answer, judge
from benchmarks.hostile import CATEGORIES, OVERSIZE, Case, hostile_cases, sample

LIMIT_PIXELS, LIMIT_BYTES = 40_000_000, 256 * 2**20


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    return hostile_cases(seed=0)


def test_the_table_is_large_covers_every_category_and_is_seeded(cases: list[Case]) -> None:
    assert len(cases) >= 1000
    assert {c.category for c in cases} == set(CATEGORIES)
    assert len({c.name for c in cases}) == len(cases)
    assert {c.expect for c in cases} == {"2xx", "4xx"}
    again = hostile_cases(seed=0)
    assert [(c.name, c.body, c.raw) for c in again] == [(c.name, c.body, c.raw) for c in cases]
    other = {c.name: c.body for c in hostile_cases(seed=1) if c.category == "random_bytes"}
    mine = {c.name: c.body for c in cases if c.category == "random_bytes"}
    assert other != mine
    chosen = sample(cases, 2)
    assert {c.category for c in chosen} == set(CATEGORIES)
    assert len(chosen) <= 2 * len(CATEGORIES) and sample(cases, 2) == chosen


def _file(case: Case) -> bytes:
    """The ``file`` part of a case's multipart body."""
    body = b"".join(p for p in case.body if isinstance(p, bytes))
    return body.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n--", 1)[0]


def test_pixel_bombs_claim_huge_images_in_their_headers(
    cases: list[Case], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # Pillow's own guard would refuse them
    bombs = {c.name.split("-as-")[0]: _file(c) for c in cases if c.category == "pixel_bomb"}
    assert len(bombs) >= 12
    for name, data in bombs.items():
        if "dicom" in name:
            ds = pydicom.dcmread(BytesIO(data), force=True, stop_before_pixels=True)
            pixels = ds.Rows * ds.Columns
            decoded = pixels * ds.SamplesPerPixel * ds.BitsAllocated // 8
        else:
            img = Image.open(BytesIO(data))  # reads the header only
            pixels = img.size[0] * img.size[1]
            decoded = pixels
        assert pixels > LIMIT_PIXELS or decoded > LIMIT_BYTES, name
        assert len(data) < 200_000, name  # cheap to send


def test_the_16bit_png_bomb_is_a_whole_valid_stream(cases: list[Case]) -> None:
    data = _file(next(c for c in cases if c.name.startswith("png-16bit-9000x9000")))
    width, height, depth = struct.unpack(">IIB", data[16:25])
    assert (width, height, depth) == (9000, 9000, 16)
    idat = data[41 : 41 + struct.unpack(">I", data[33:37])[0]]
    inflater, total = zlib.decompressobj(), 0
    for start in range(0, len(idat), 1 << 16):
        total += len(inflater.decompress(idat[start : start + (1 << 16)]))
    assert inflater.eof and total == height * (1 + 2 * width)  # Adler-32 checked too
    assert len(data) < 200_000


def test_the_deflated_dicom_bomb_inflates_to_a_gibibyte(cases: list[Case], tmp_path: Path):
    data = _file(next(c for c in cases if c.name == "deflated-1GiB-/v1/predict"))
    assert len(data) < 1.2e6
    (tmp_path / "bomb.dcm").write_bytes(data)
    meta = pydicom.filereader.read_file_meta_info(tmp_path / "bomb.dcm")
    assert meta.TransferSyntaxUID == pydicom.uid.DeflatedExplicitVRLittleEndian
    start = data.index(b"DICM") + 4 + 12 + meta.FileMetaInformationGroupLength
    inflater, total, head = zlib.decompressobj(-zlib.MAX_WBITS), 0, b""
    for at in range(start, len(data), 1 << 16):
        chunk = inflater.decompress(data[at : at + (1 << 16)])
        head = head or chunk
        total += len(chunk)
    assert inflater.eof and total > 2**30
    header = pydicom.dcmread(BytesIO(head[:4096]), force=True, stop_before_pixels=True)
    assert header.Rows * header.Columns * 2 == 2**29  # it claims 16384 x 16384 16-bit


@pytest.mark.parametrize("chunked", [False, True])
def test_a_case_on_the_wire_is_the_http_request_it_describes(chunked: bool) -> None:
    case = Case("valid", "x", headers=(("Content-Type", "text/plain"),), body=(b"ab", 3, b"c"))
    case = Case(**{**case.__dict__, "chunked": chunked})
    server = h11.Connection(h11.SERVER)
    for piece in case.wire():
        server.receive_data(piece)
    request, body = server.next_event(), b""
    while isinstance(event := server.next_event(), h11.Data):
        body += event.data
    assert isinstance(request, h11.Request) and request.target == b"/v1/predict"
    assert isinstance(event, h11.EndOfMessage) and body == b"ab\0\0\0c"


def test_the_oversized_uploads_stream_past_the_limit(cases: list[Case]) -> None:
    big = [c for c in cases if c.category == "oversized" and OVERSIZE in c.body]
    assert len(big) == 2 and all(c.length > 50 * 2**20 and c.bomb for c in big)


def _answer(status: int, body: dict | str, head: bytes = b"") -> Answer:
    text = body if isinstance(body, str) else json.dumps(body)
    return Answer(status, b"HTTP/1.1 %d X\r\n" % status + head, text.encode(), False, 0.1)


def test_verdicts() -> None:
    refused = {"error": "unreadable_image", "detail": "cannot decode the upload"}
    bomb = Case("pixel_bomb", "b", target="/v1/explain", bomb=True, secrets=("FNAMEMARK1",))
    assert judge(bomb, _answer(422, refused))["outcome"] == "expected"
    busy = judge(bomb, _answer(503, {"error": "busy", "detail": "retry"}))
    assert busy["outcome"] == "busy" and not busy["server_error"]
    accepted = judge(bomb, _answer(200, {"decision": "x", "name": "FNAMEMARK1.png"}))
    assert accepted["bomb_accepted"] and accepted["echoed"] == ["FNAMEMARK1"]
    plain = judge(Case("url", "u"), _answer(400, "Invalid HTTP request received."))
    assert plain["non_json_error"] and plain["outcome"] == "expected"
    crash = judge(Case("valid", "v", expect="2xx"), _answer(500, refused))
    assert crash["server_error"] and crash["outcome"] == "unexpected"
    assert judge(Case("valid", "v"), Answer(0, b"", b"", True, 1.0))["outcome"] == "no_answer"


def test_a_tiny_fuzz_run_against_a_real_server(
    xray_bundle: Path, datasets_dir: Path, tmp_path: Path
) -> None:
    argv = ["--bundle", str(xray_bundle), "--data", str(datasets_dir), "--work", str(tmp_path)]
    argv += ["--out", str(tmp_path / "results"), "--seconds", "1", "--concurrency", "4"]
    argv += ["--sample", "2", "--request-timeout", "2"]
    result = fuzz_serving.main(argv)
    assert json.loads((tmp_path / "results" / "fuzz_serving.json").read_text()) == result
    assert set(result["categories"]) == set(CATEGORIES)
    totals = result["totals"]
    assert totals["bombs"] >= 4 and totals["bombs_accepted"] == 0
    for key in ("status_5xx", "load_5xx", "non_json_errors", "echoes", "deaths"):
        assert totals[key] == 0, (key, result["problems"])
    assert totals["unexpected"] == totals["no_answer"] == 0, result["problems"]
    assert result["alive_after"] and result["server_exit_code"] is not None
    log = result["log"]
    assert log["bytes"] > 0 and log["secrets_found"] == [] and log["control_bytes"] == 0
    assert log["forged_lines"] == log["tracebacks"] == 0
    b = result["load_b"]
    assert result["load_a"]["requests"] > 0 and b["predict"]["requests"] > 0
    assert set(b["explain"]["statuses"]) <= {"200", "503"}
    assert result["baseline_pss_mb"] > 100 and result["peak_pss_mb"] >= result["baseline_pss_mb"]
    assert set(result["targets"]) >= {"server_deaths", "status_5xx", "bombs_accepted"}
    entry = fuzz_serving.render(result)
    assert entry.startswith("## ") and "| dicom_bomb |" in entry and "| status_5xx |" in entry
