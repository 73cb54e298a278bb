"""Micro-batching: requests that arrive together are scored in one model call, off the event loop.

Every image submitted waits in an asyncio queue. One worker task takes the first, then collects what
else arrives within `max_wait_ms` (up to `max_batch` images) and hands the batch to a single scoring
thread, so torch never runs on the event loop and never runs twice at once. When a batch call fails,
each of its images is scored alone, so that one bad image fails its own request and not the others.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from defectmine.errors import ConfigError

log = logging.getLogger("defectmine.serve")


@dataclass
class BatchStats:
    """How the batcher has grouped images so far (shown by GET /health)."""

    batches: int = 0
    images: int = 0
    largest: int = 0
    failed_batches: int = 0
    sizes: list[int] = field(default_factory=list)  # the last 100 batch sizes

    def add(self, size: int) -> None:
        self.batches, self.images, self.largest = self.batches + 1, self.images + size, max(self.largest, size)
        self.sizes = (self.sizes + [size])[-100:]


class MicroBatcher:
    """Collects items submitted within `max_wait_ms` of each other into batches of at most `max_batch`
    and answers each with its own element of `score_many(items)` (a list of the same length).

    Use inside a running event loop: `start()`, `await submit(item)`, `await stop()`.
    """

    def __init__(self, score_many, max_batch: int = 16, max_wait_ms: float = 5.0) -> None:
        if int(max_batch) < 1:
            raise ConfigError(f"--max-batch {max_batch}: must be at least 1, e.g. 16.")
        if not 0 <= float(max_wait_ms) <= 1000:
            raise ConfigError(f"--max-wait-ms {max_wait_ms}: must be in 0..1000, e.g. 5.")
        self.score_many, self.max_batch, self.max_wait = score_many, int(max_batch), float(max_wait_ms) / 1000
        self.stats = BatchStats()
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="defectmine-score")
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self._task = self._executor = None

    async def submit(self, item):
        """The result of scoring `item` (in whatever batch it joins); re-raises its own failure."""
        if self._task is None:
            raise RuntimeError("MicroBatcher.submit before start()")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def run_in_scoring_thread(self, function, *args):
        """`function(*args)` on the scoring thread (e.g. scoring a folder at start, between batches)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                try:  # what is queued already joins at once; then wait until the deadline
                    batch.append(self._queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), left))
                except asyncio.TimeoutError:
                    break
            batch = [(item, future) for item, future in batch if not future.done()]  # clients that left
            if not batch:
                continue
            results = await loop.run_in_executor(self._executor, self._score_safely, [item for item, _ in batch])
            self.stats.add(len(batch))
            for (_, future), result in zip(batch, results):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    def _score_safely(self, items: list) -> list:
        """`score_many(items)`; when it fails, each item alone, its exception as its result."""
        try:
            results = self.score_many(items)
            if len(results) != len(items):
                raise RuntimeError(f"score_many returned {len(results)} results for {len(items)} items")
            return results
        except Exception as err:
            if len(items) == 1:
                return [err]
            self.stats.failed_batches += 1
            log.warning("a batch of %d failed (%s); scoring its images one by one", len(items), err)
        return [self._score_safely([item])[0] for item in items]
