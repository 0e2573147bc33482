"""Progress reporting: a tqdm bar on a terminal, sparse JSON lines when output is piped.

Long work (training, evaluation, download) goes through :func:`progress` so that logs in CI or
on a cluster stay short and machine-readable instead of filling up with carriage returns.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def interactive() -> bool:
    """True when a person is watching a terminal (and MEDSIGHT_PROGRESS does not say 'json')."""
    mode = os.environ.get("MEDSIGHT_PROGRESS", "auto")
    if mode == "json":
        return False
    if mode == "bar":
        return True
    return sys.stderr.isatty()


def log_event(event: str, **fields: object) -> None:
    """Write one JSON line to stderr (the machine-readable form of progress)."""
    print(json.dumps({"event": event, **fields}, default=str), file=sys.stderr, flush=True)


class Progress:
    """A progress counter that is a tqdm bar or a JSON line every ``every_s`` seconds."""

    def __init__(self, total: int | None, desc: str, unit: str = "it", every_s: float = 10.0):
        self.total, self.desc, self.unit, self.every_s = total, desc, unit, every_s
        self.done = 0
        self._bar = tqdm(total=total, desc=desc, unit=unit, leave=False) if interactive() else None
        self._last = time.monotonic()
        self._start = self._last

    def update(self, n: int = 1, **postfix: object) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)
            return
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            log_event("progress", task=self.desc, done=self.done, total=self.total, **postfix)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.done:
            seconds = round(time.monotonic() - self._start, 2)
            log_event("done", task=self.desc, done=self.done, total=self.total, seconds=seconds)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(
    items: Iterable[T], desc: str, total: int | None = None, unit: str = "it"
) -> Iterator[T]:
    """Iterate over ``items`` while reporting progress."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(total, desc, unit) as bar:
        for item in items:
            yield item
            bar.update()
