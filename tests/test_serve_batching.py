"""The micro-batcher: images that arrive together are scored in one call, a failing image fails only
its own request, and scoring runs off the event loop."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from defectmine.errors import ConfigError
from defectmine.serve.batching import MicroBatcher


class Recorder:
    """score_many stand-in: doubles each item, records the batches and the threads it ran on."""

    def __init__(self, delay: float = 0.0, bad=None):
        self.batches, self.threads, self.delay, self.bad = [], set(), delay, bad

    def __call__(self, items):
        self.batches.append(list(items))
        self.threads.add(threading.get_ident())
        time.sleep(self.delay)
        if self.bad is not None and self.bad in items:
            raise ValueError(f"cannot score {self.bad}")
        return [2 * item for item in items]


def _run(coroutine):
    return asyncio.run(coroutine)


async def _submit_together(batcher: MicroBatcher, items):
    batcher.start()
    try:
        return await asyncio.gather(*(batcher.submit(item) for item in items), return_exceptions=True)
    finally:
        await batcher.stop()


def test_items_arriving_together_are_scored_in_one_call():
    recorder = Recorder()
    results = _run(_submit_together(MicroBatcher(recorder, max_batch=16, max_wait_ms=50), [1, 2, 3, 4, 5]))
    assert results == [2, 4, 6, 8, 10]
    assert recorder.batches == [[1, 2, 3, 4, 5]]
    assert threading.get_ident() not in recorder.threads  # scored on the scoring thread


def test_batches_close_at_max_batch():
    recorder = Recorder()
    batcher = MicroBatcher(recorder, max_batch=2, max_wait_ms=50)
    assert _run(_submit_together(batcher, [1, 2, 3, 4, 5])) == [2, 4, 6, 8, 10]
    assert [len(b) for b in recorder.batches] == [2, 2, 1] and batcher.stats.largest == 2


def test_items_far_apart_are_not_held_back():
    recorder = Recorder()

    async def apart():
        batcher = MicroBatcher(recorder, max_batch=16, max_wait_ms=1)
        batcher.start()
        try:
            first = await batcher.submit(1)
            await asyncio.sleep(0.05)
            return first, await batcher.submit(2)
        finally:
            await batcher.stop()

    assert _run(apart()) == (2, 4) and recorder.batches == [[1], [2]]


def test_a_failing_item_fails_only_its_own_request():
    recorder = Recorder(bad=3)
    batcher = MicroBatcher(recorder, max_batch=16, max_wait_ms=50)
    results = _run(_submit_together(batcher, [1, 2, 3, 4]))
    assert results[:2] == [2, 4] and results[3] == 8
    assert isinstance(results[2], ValueError) and "cannot score 3" in str(results[2])
    assert batcher.stats.failed_batches == 1


def test_scoring_does_not_block_the_event_loop():
    """While a slow batch scores (0.3 s), the loop keeps running other coroutines (ticks every 10 ms)."""
    recorder = Recorder(delay=0.3)

    async def ticking():
        ticks = 0

        async def tick():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.get_running_loop().create_task(tick())
        results = await _submit_together(MicroBatcher(recorder, max_wait_ms=0), [1])
        ticker.cancel()
        return results, ticks

    results, ticks = _run(ticking())
    assert results == [2] and ticks >= 10


@pytest.mark.parametrize("kwargs, fragment", [({"max_batch": 0}, "--max-batch"), ({"max_wait_ms": -1}, "--max-wait-ms")])
def test_bad_batch_settings_are_config_errors(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        MicroBatcher(Recorder(), **kwargs)
