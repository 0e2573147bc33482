"""Micro-batching: concurrent single-image requests share one model call.

A lone request runs at once (after at most ``window_ms``); requests that arrive while the model
is busy wait in a queue and go together into the next call, up to ``max_batch``. Throughput
under load rises (one batched forward pass costs far less than N single ones) while a single
request's latency stays that of one forward pass. The model runs in an executor thread, so the
event loop keeps accepting and decoding uploads meanwhile. ``stats()`` also gives the mean time
of a model call per batch size: one image's model time is the compute floor a server is judged
against (benchmarks/serving.py).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Executor

import numpy as np

Item = tuple[np.ndarray, "asyncio.Future[tuple[np.ndarray, int]]"]


class MicroBatcher:
    """Run ``fn`` on stacked inputs ``(N, ...)``; each caller gets its own output row."""

    def __init__(
        self,
        fn: Callable[[np.ndarray], np.ndarray],
        executor: Executor,
        max_batch: int = 16,
        window_ms: float = 2.0,
    ):
        if max_batch < 1 or window_ms < 0:
            raise ValueError(
                f"need max_batch >= 1 and window_ms >= 0, got {max_batch}, {window_ms}"
            )
        self.fn, self.executor = fn, executor
        self.max_batch, self.window = max_batch, window_ms / 1000
        self.batch_sizes: Counter[int] = Counter()  # batch size -> number of model calls
        self.model_seconds: Counter[int] = Counter()  # batch size -> seconds in those calls
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[Item] | None = None
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, item: np.ndarray) -> tuple[np.ndarray, int]:
        """The output row for ``item`` and the size of the batch it ran in."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._worker is None or self._worker.done():
            # started lazily on the loop that serves requests (a test client may use several)
            self._loop, self._queue = loop, asyncio.Queue()
            self._worker = loop.create_task(self._run(self._queue))
        future: asyncio.Future[tuple[np.ndarray, int]] = loop.create_future()
        self._queue.put_nowait((item, future))
        return await future

    async def close(self) -> None:
        """Stop the worker (at application shutdown)."""
        if self._worker is not None and self._loop is asyncio.get_running_loop():
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        self._worker = None

    def stats(self) -> dict[str, object]:
        calls = sum(self.batch_sizes.values())
        items = sum(size * n for size, n in self.batch_sizes.items())
        return {
            "model_calls": calls,
            "images": items,
            "mean_batch_size": round(items / calls, 3) if calls else None,
            "batch_sizes": {str(size): n for size, n in sorted(self.batch_sizes.items())},
            "model_ms": {  # mean time of one model call of each batch size
                str(size): round(self.model_seconds[size] / n * 1000, 3)
                for size, n in sorted(self.batch_sizes.items())
            },
            "max_batch": self.max_batch,
            "window_ms": self.window * 1000,
        }

    def _timed(self, stacked: np.ndarray) -> tuple[np.ndarray, float]:
        """The model's output and its own time (in the executor: no queueing counted)."""
        start = time.perf_counter()
        out = self.fn(stacked)
        return out, time.perf_counter() - start

    async def _gather(self, queue: asyncio.Queue[Item]) -> list[Item]:
        batch = [await queue.get()]
        deadline = asyncio.get_running_loop().time() + self.window
        while len(batch) < self.max_batch:
            if not queue.empty():  # arrived while the model was busy: no waiting at all
                batch.append(queue.get_nowait())
                continue
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return [(x, f) for x, f in batch if not f.done()]  # drop requests already cancelled

    async def _run(self, queue: asyncio.Queue[Item]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather(queue)
            if not batch:
                continue
            try:
                stacked = np.stack([x for x, _ in batch])
                out, seconds = await loop.run_in_executor(self.executor, self._timed, stacked)
                if len(out) != len(batch):
                    raise RuntimeError(f"model gave {len(out)} rows for {len(batch)} images")
            except Exception as exc:  # every caller of this batch gets the error
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batch_sizes[len(batch)] += 1
            self.model_seconds[len(batch)] += seconds
            for (_, future), row in zip(batch, out, strict=True):
                if not future.done():
                    future.set_result((row, len(batch)))
