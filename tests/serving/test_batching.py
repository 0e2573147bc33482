"""MicroBatcher: concurrent requests share one model call and each gets its own row, a lone one
runs alone, max_batch holds, an error reaches every caller of its batch without stopping the
batcher, and stats() counts what ran."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from medsight.serving.batching import MicroBatcher


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool


class Model:
    """Doubles its input; records the batch size of every call; can be told to fail."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.fail_on: float | None = None

    def __call__(self, stacked: np.ndarray) -> np.ndarray:
        self.calls.append(len(stacked))
        if self.fail_on is not None and (stacked == self.fail_on).any():
            raise ValueError("model exploded")
        return stacked * 2


def item(value: float) -> np.ndarray:
    return np.full((2, 3), value, dtype=np.float32)


async def submit_all(batcher: MicroBatcher, values: list[float]) -> list:
    return await asyncio.gather(*(batcher.submit(item(v)) for v in values), return_exceptions=True)


def test_concurrent_submits_share_one_call_and_each_gets_its_row(executor) -> None:
    model = Model()
    batcher = MicroBatcher(model, executor, max_batch=8, window_ms=50)

    async def main() -> list:
        try:
            return await submit_all(batcher, [1.0, 2.0, 3.0, 4.0, 5.0])
        finally:
            await batcher.close()

    results = asyncio.run(main())
    assert model.calls == [5]
    for value, (row, size) in zip([1.0, 2.0, 3.0, 4.0, 5.0], results, strict=True):
        assert size == 5
        np.testing.assert_array_equal(row, item(value) * 2)


def test_a_lone_request_runs_at_once(executor) -> None:
    model = Model()
    batcher = MicroBatcher(model, executor, max_batch=16, window_ms=0)

    async def main():
        try:
            return await asyncio.wait_for(batcher.submit(item(7.0)), timeout=5)
        finally:
            await batcher.close()

    row, size = asyncio.run(main())
    assert size == 1 and model.calls == [1]
    np.testing.assert_array_equal(row, item(14.0))


def test_a_lone_request_waits_no_longer_than_the_window(executor) -> None:
    model = Model()
    batcher = MicroBatcher(model, executor, max_batch=16, window_ms=20)

    async def main() -> tuple[float, int]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            _, size = await asyncio.wait_for(batcher.submit(item(1.0)), timeout=5)
        finally:
            await batcher.close()
        return loop.time() - start, size

    elapsed, size = asyncio.run(main())
    assert size == 1 and elapsed < 2.0  # a window of 20 ms, generous margin for a busy CI


@pytest.mark.parametrize(
    ("max_batch", "n", "calls"), [(4, 10, [4, 4, 2]), (1, 3, [1, 1, 1]), (5, 5, [5])]
)
def test_max_batch_is_respected(executor, max_batch: int, n: int, calls: list[int]) -> None:
    model = Model()
    batcher = MicroBatcher(model, executor, max_batch=max_batch, window_ms=20)

    async def main() -> list:
        try:
            return await submit_all(batcher, [float(v) for v in range(n)])
        finally:
            await batcher.close()

    results = asyncio.run(main())
    assert model.calls == calls and max(model.calls) <= max_batch
    for value, (row, size) in enumerate(results):
        assert size <= max_batch
        np.testing.assert_array_equal(row, item(float(value)) * 2)
    assert sorted(size for _, size in results) == sorted(s for s in calls for _ in range(s))


def test_an_error_reaches_every_caller_of_the_batch_and_the_batcher_goes_on(executor) -> None:
    model = Model()
    model.fail_on = 3.0
    batcher = MicroBatcher(model, executor, max_batch=8, window_ms=20)

    async def main() -> tuple[list, tuple]:
        try:
            failed = await submit_all(batcher, [1.0, 2.0, 3.0])
            model.fail_on = None
            after = await asyncio.wait_for(batcher.submit(item(4.0)), timeout=5)
            return failed, after
        finally:
            await batcher.close()

    failed, (row, size) = asyncio.run(main())
    assert len(failed) == 3
    assert all(isinstance(r, ValueError) and str(r) == "model exploded" for r in failed)
    np.testing.assert_array_equal(row, item(8.0))
    assert size == 1 and model.calls == [3, 1]
    stats = batcher.stats()  # the failed call is not counted as served
    assert stats["model_calls"] == 1 and stats["images"] == 1


def test_a_model_giving_the_wrong_number_of_rows_fails_every_caller(executor) -> None:
    batcher = MicroBatcher(lambda stacked: stacked[:1], executor, max_batch=8, window_ms=20)

    async def main() -> list:
        try:
            return await submit_all(batcher, [1.0, 2.0])
        finally:
            await batcher.close()

    results = asyncio.run(main())
    assert len(results) == 2
    for r in results:
        assert isinstance(r, RuntimeError) and "1 rows for 2 images" in str(r)


def test_stats_counts_calls_images_and_batch_sizes(executor) -> None:
    model = Model()
    batcher = MicroBatcher(model, executor, max_batch=4, window_ms=20)
    assert batcher.stats() == {
        "model_calls": 0,
        "images": 0,
        "mean_batch_size": None,
        "batch_sizes": {},
        "model_ms": {},
        "max_batch": 4,
        "window_ms": 20.0,
    }

    async def main() -> None:
        try:
            await submit_all(batcher, [float(v) for v in range(6)])  # 4 + 2
            await batcher.submit(item(9.0))  # 1
        finally:
            await batcher.close()

    asyncio.run(main())
    stats = batcher.stats()
    assert stats.pop("model_ms").keys() == {"1", "2", "4"}
    assert stats == {
        "model_calls": 3,
        "images": 7,
        "mean_batch_size": round(7 / 3, 3),
        "batch_sizes": {"1": 1, "2": 1, "4": 1},
        "max_batch": 4,
        "window_ms": 20.0,
    }


def test_stats_give_the_mean_model_time_per_batch_size_without_queueing(executor) -> None:
    """A model call of n images takes 30 ms x n here; the time the second pair spends queued
    behind the busy model (60 ms) is not in the figure."""

    def slow(stacked: np.ndarray) -> np.ndarray:
        time.sleep(0.03 * len(stacked))
        return stacked

    batcher = MicroBatcher(slow, executor, max_batch=2, window_ms=20)

    async def main() -> None:
        try:
            await submit_all(batcher, [1.0, 2.0, 3.0, 4.0])  # 2 + 2
            await batcher.submit(item(9.0))  # alone
        finally:
            await batcher.close()

    asyncio.run(main())
    model_ms = batcher.stats()["model_ms"]
    assert model_ms.keys() == {"1", "2"}
    assert model_ms["1"] >= 30 and model_ms["2"] >= 60
    # queueing counted would make the second pair's call 60 + 60 ms: a mean of at least 90
    assert model_ms["2"] < 85


def test_a_cancelled_request_is_left_out_of_the_next_batch(executor) -> None:
    release = threading.Event()
    calls: list[np.ndarray] = []

    def model(stacked: np.ndarray) -> np.ndarray:
        calls.append(stacked[:, 0, 0].copy())
        if len(calls) == 1:
            release.wait(5)  # keep the model busy while more requests queue up
        return stacked

    batcher = MicroBatcher(model, executor, max_batch=8, window_ms=0)

    async def main() -> list:
        try:
            first = asyncio.ensure_future(batcher.submit(item(0.0)))
            while not calls:  # the first call has started and holds the model
                await asyncio.sleep(0.005)
            queued = [asyncio.ensure_future(batcher.submit(item(v))) for v in (1.0, 2.0, 3.0)]
            await asyncio.sleep(0.01)
            queued[1].cancel()
            await asyncio.sleep(0.01)
            release.set()
            return await asyncio.gather(first, *queued, return_exceptions=True)
        finally:
            release.set()
            await batcher.close()

    results = asyncio.run(main())
    assert isinstance(results[2], asyncio.CancelledError)
    assert [list(c) for c in calls] == [[0.0], [1.0, 3.0]]
    assert results[1][1] == 2 and results[3][1] == 2
    np.testing.assert_array_equal(results[3][0], item(3.0))


def test_the_batcher_works_on_a_second_event_loop(executor) -> None:
    model = Model()
    batcher = MicroBatcher(model, executor, max_batch=4, window_ms=5)

    async def once(value: float):
        return await asyncio.wait_for(batcher.submit(item(value)), timeout=5)

    first = asyncio.run(once(1.0))  # its worker dies with this loop, no close()
    second = asyncio.run(once(2.0))
    np.testing.assert_array_equal(first[0], item(2.0))
    np.testing.assert_array_equal(second[0], item(4.0))
    assert model.calls == [1, 1]


def test_submit_after_close_restarts_the_worker(executor) -> None:
    model = Model()
    batcher = MicroBatcher(model, executor, max_batch=4, window_ms=5)

    async def main():
        await batcher.submit(item(1.0))
        await batcher.close()
        assert batcher._worker is None
        try:
            return await asyncio.wait_for(batcher.submit(item(5.0)), timeout=5)
        finally:
            await batcher.close()

    row, size = asyncio.run(main())
    np.testing.assert_array_equal(row, item(10.0))
    assert model.calls == [1, 1]


@pytest.mark.parametrize(("max_batch", "window_ms"), [(0, 2.0), (-3, 2.0), (4, -0.5), (0, -1.0)])
def test_invalid_settings_raise(executor, max_batch: int, window_ms: float) -> None:
    with pytest.raises(ValueError, match="max_batch >= 1 and window_ms >= 0"):
        MicroBatcher(Model(), executor, max_batch=max_batch, window_ms=window_ms)


@pytest.mark.parametrize(("max_batch", "window_ms"), [(1, 0.0), (64, 100.0)])
def test_edge_settings_are_accepted(executor, max_batch: int, window_ms: float) -> None:
    stats = MicroBatcher(Model(), executor, max_batch=max_batch, window_ms=window_ms).stats()
    assert stats["max_batch"] == max_batch and stats["window_ms"] == window_ms
