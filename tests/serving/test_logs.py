"""The server's log lines: no query strings, no raw control bytes."""

from __future__ import annotations

import io
import logging
import logging.config

import pytest

from medsight.serving.logs import SafeLogRecords, printable, uvicorn_log_config


def test_printable_escapes_control_characters() -> None:
    assert printable("/v1/model\x1b[31m\x00x\n") == "/v1/model\\x1b[31m\\x00x\\n"
    assert printable("ordinary/path-é.png") == "ordinary/path-é.png"


def _access_record(path: str) -> logging.LogRecord:
    """The record uvicorn's access logger makes for one request."""
    args = ("127.0.0.1:5000", "GET", path, "1.1", 200)
    return logging.LogRecord(
        "uvicorn.access", logging.INFO, "h11", 1, '%s - "%s %s HTTP/%s" %d', args, None
    )


def test_access_lines_lose_the_query_string_and_control_bytes() -> None:
    record = _access_record("/v1/predict\x1b[2J?api_key=s3cret&x=\x00")
    assert SafeLogRecords().filter(record)
    line = record.getMessage()
    assert line == '127.0.0.1:5000 - "GET /v1/predict\\x1b[2J HTTP/1.1" 200'
    assert "s3cret" not in line


def test_other_records_are_escaped_not_dropped() -> None:
    record = logging.LogRecord(
        "uvicorn.error", logging.WARNING, "x", 1, "bad name %s", ("a\x07b",), None
    )
    assert SafeLogRecords().filter(record)
    assert record.getMessage() == "bad name a\\x07b"


def test_uvicorn_configuration_applies_the_filter(monkeypatch: pytest.MonkeyPatch) -> None:
    config = uvicorn_log_config()
    stream, default = io.StringIO(), io.StringIO()
    config["handlers"]["access"]["stream"] = stream
    config["handlers"]["default"]["stream"] = default
    ours = logging.getLogger("medsight.serving")
    before = (ours.handlers[:], ours.propagate, ours.level)
    logging.config.dictConfig(config)
    try:
        logging.getLogger("uvicorn.access").info(
            '%s - "%s %s HTTP/%s" %d', "10.0.0.1:1", "GET", "/?api_key=k3y\x1b", "1.1", 404
        )
        logging.getLogger("medsight.serving").info("the server's own line \x1b")
    finally:
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
        ours.handlers[:], ours.propagate, ours.level = before  # later tests capture it
    written = stream.getvalue()
    assert '"GET / HTTP/1.1" 404' in written and "k3y" not in written
    # the server's line is written once, by uvicorn's default handler, escaped
    assert default.getvalue().count("the server's own line \\x1b") == 1


def test_the_servers_own_request_line_escapes_the_decoded_path(
    xray_bundle, caplog: pytest.LogCaptureFixture
) -> None:
    """Its line goes through whatever handler the application has, not uvicorn's filtered ones."""
    from fastapi.testclient import TestClient

    from medsight.serving.app import create_app

    with TestClient(create_app(xray_bundle)) as client, caplog.at_level("INFO", "medsight.serving"):
        assert client.get("/v1/%1b%5b31mred%1b%5b0m%00").status_code == 404
    lines = [r.getMessage() for r in caplog.records if r.name == "medsight.serving"]
    assert any("/v1/\\x1b[31mred\\x1b[0m\\x00 404" in line for line in lines), lines
    assert all(line.startswith("testclient:50000 GET /") for line in lines), lines
    assert not any("\x1b" in line or "\x00" in line for line in lines)


def test_serve_writes_one_line_per_request_not_two(
    xray_bundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn's access line is off: the server's own line (above) has the client as well."""
    import uvicorn

    from medsight import api

    given: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: given.update(options))
    api.serve(xray_bundle, port=0)
    assert given["access_log"] is False
    assert given["log_config"] == uvicorn_log_config()  # its error lines are still filtered
