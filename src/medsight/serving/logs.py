"""What the server's logs may hold: no query strings (an API key sent as ``?api_key=`` would
land in every access line), and no raw control bytes from a URL (escape sequences and NUL
would reach the terminal or the log file as they came)."""

from __future__ import annotations

import copy
import logging
from typing import Any


def printable(text: str) -> str:
    """``text`` with every non-printable character written as an escape (``\\x1b``, ``\\x00``)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class SafeLogRecords(logging.Filter):
    """Rewrites each record before it is written: uvicorn's access lines lose the query string
    of their path; every message has its control characters escaped."""

    def filter(self, record: logging.LogRecord) -> bool:
        if (
            record.name == "uvicorn.access"
            and isinstance(record.args, tuple)
            and len(record.args) == 5
        ):
            client, method, path, version, status = record.args
            path = printable(str(path).split("?", 1)[0])
            record.args = (printable(str(client)), method, path, version, status)
            return True
        message = record.getMessage()
        if not message.isprintable():
            record.msg, record.args = printable(message), None
        return True


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's own logging configuration with :class:`SafeLogRecords` on its handlers, and
    the server's own lines (``medsight.serving``: one per request) written by its default
    handler, also when ``medsight.serve`` runs from Python without any logging set up."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["safe"] = {"()": f"{__name__}.SafeLogRecords"}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("safe")
    config["loggers"]["medsight.serving"] = {
        "handlers": ["default"],
        "level": "INFO",
        "propagate": False,
    }
    return config
