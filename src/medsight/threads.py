"""Running a function over many items on a few threads, with a bounded queue.

``ThreadPoolExecutor.map`` submits every item up front: a future per image, which for a data
set of a million files is hundreds of megabytes held until the last one is done.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait


def each_in_threads(fn: Callable[[int], None], count: int, threads: int) -> Iterator[None]:
    """Call ``fn(i)`` for ``i`` in ``0..count-1`` on ``threads`` threads, yielding once as each
    call finishes (its exception, if any, is raised here); at most ``4 x threads`` calls wait."""
    threads = max(1, threads)
    with ThreadPoolExecutor(threads) as pool:
        pending: set = set()
        for i in range(count):
            if len(pending) >= 4 * threads:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    future.result()
                    yield
            pending.add(pool.submit(fn, i))
        for future in wait(pending).done:
            future.result()
            yield
