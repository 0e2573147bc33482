"""each_in_threads: every item once, a bounded queue, errors raised to the caller."""

from __future__ import annotations

import threading
import time

import pytest

from medsight.threads import each_in_threads


def test_every_item_runs_once() -> None:
    seen, lock = [], threading.Lock()

    def one(i: int) -> None:
        with lock:
            seen.append(i)

    assert sum(1 for _ in each_in_threads(one, 500, threads=2)) == 500
    assert sorted(seen) == list(range(500))


def test_no_more_than_four_per_thread_are_queued_ahead_of_the_caller() -> None:
    """Executor.map would have queued (and so run) all 1,000 while the caller waits."""
    started = []
    calls = each_in_threads(started.append, 1000, threads=2)
    next(calls)
    time.sleep(0.3)  # the threads have long finished what was queued
    assert 1 <= len(started) <= 4 * 2 + 1
    assert sum(1 for _ in calls) == 999 and len(started) == 1000


def test_an_error_reaches_the_caller() -> None:
    def one(i: int) -> None:
        if i == 7:
            raise ValueError("item 7")

    with pytest.raises(ValueError, match="item 7"):
        list(each_in_threads(one, 20, threads=2))


def test_nothing_to_do() -> None:
    assert list(each_in_threads(lambda i: None, 0, threads=2)) == []
