"""DynamicBatcher and time: deadlines, the delay window, the observer's times.

Every duration here is measured on the batcher's clock, the virtual time of
``batching.VirtualTimeLoop``: exact, and independent of how busy the machine is.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from inferno.errors import DeadlineExceededError
from inferno.serving.batcher import BatchRecord

from .batching import WAIT_S, FakeRuntime, Recorder, hold_first, now, run, serving, until
from .batching import batcher as make_batcher


def test_a_timeout_error_from_execute_is_not_mistaken_for_the_deadline() -> None:
    fake = FakeRuntime()
    fake.error = TimeoutError("device watchdog")

    async def scenario() -> None:
        async with serving(fake, max_batch_size=4) as batcher:
            with pytest.raises(TimeoutError, match="device watchdog"):
                await batcher.submit("x", deadline=now() + WAIT_S)

    run(scenario)


def test_a_request_whose_deadline_passes_while_it_waits_fails_and_is_never_executed() -> None:
    fake = FakeRuntime(held=True)

    async def scenario() -> list[Any]:
        async with serving(fake, max_batch_size=8) as batcher:
            first = await hold_first(batcher, fake, "slow")
            start = now()
            with pytest.raises(DeadlineExceededError):
                await batcher.submit("late", deadline=start + 0.05)
            waited = now() - start
            fake.gate.set()
            return [waited, await first, await batcher.submit("after")]

    waited, first, after = run(scenario)
    assert waited == pytest.approx(0.05)  # at its deadline, not before or after
    assert (first, after) == (("done", "slow"), ("done", "after"))
    assert fake.batches == [["slow"], ["after"]]


def test_an_expired_request_is_dropped_when_a_batch_is_taken() -> None:
    now = [100.0]
    fake = FakeRuntime(held=True)

    async def scenario() -> list[Any]:
        async with serving(fake, max_batch_size=8, clock=lambda: now[0]) as batcher:
            first = await hold_first(batcher, fake, "slow")
            late = asyncio.create_task(batcher.submit("late", deadline=101.0))
            on_time = asyncio.create_task(batcher.submit("on-time", deadline=1000.0))
            await until(lambda: batcher.queue_depth == 2)
            now[0] = 150.0  # the clock passes 'late's deadline while 'slow' runs
            fake.gate.set()
            outcomes = await asyncio.gather(first, late, on_time, return_exceptions=True)
            return list(outcomes)

    first, late, on_time = run(scenario)
    assert isinstance(late, DeadlineExceededError)
    assert "in the queue" in str(late)
    assert (first, on_time) == (("done", "slow"), ("done", "on-time"))
    assert fake.batches == [["slow"], ["on-time"]]


def test_a_request_past_its_deadline_on_arrival_is_never_executed() -> None:
    fake = FakeRuntime()

    async def scenario() -> int:
        async with serving(fake, max_batch_size=4) as batcher:
            with pytest.raises(DeadlineExceededError):
                await batcher.submit("stale", deadline=now() - 1.0)
            await batcher.submit("fresh")
            return batcher.queue_depth

    assert run(scenario) == 0
    assert fake.batches == [["fresh"]]


def test_the_delay_window_gathers_requests_that_arrive_within_it() -> None:
    fake = FakeRuntime()

    async def scenario() -> list[Any]:
        async with serving(fake, max_batch_size=64, max_queue_delay_s=0.3) as batcher:

            async def later(item: str, after_s: float) -> Any:
                await asyncio.sleep(after_s)
                return await batcher.submit(item)

            return list(
                await asyncio.gather(batcher.submit("a"), later("b", 0.05), later("c", 0.1))
            )

    assert run(scenario) == [("done", "a"), ("done", "b"), ("done", "c")]
    assert fake.batches == [["a", "b", "c"]]


def test_the_delay_window_closes_at_the_first_request_plus_the_delay() -> None:
    fake = FakeRuntime()

    async def scenario() -> float:
        async with serving(fake, max_batch_size=64, max_queue_delay_s=0.2) as batcher:

            async def later(item: str, after_s: float) -> Any:
                await asyncio.sleep(after_s)
                return await batcher.submit(item)

            start = now()
            first = asyncio.create_task(batcher.submit("a"))
            others = asyncio.gather(later("b", 0.05), later("c", 0.45))
            await first
            latency = now() - start
            await others
            return latency

    latency = run(scenario)
    assert fake.batches == [["a", "b"], ["c"]]
    assert latency == pytest.approx(0.2)  # the window, to the tick


def test_a_full_batch_does_not_wait_for_the_window() -> None:
    fake = FakeRuntime()

    async def scenario() -> float:
        async with serving(fake, max_batch_size=2, max_queue_delay_s=WAIT_S) as batcher:
            start = now()
            await asyncio.gather(batcher.submit("a"), batcher.submit("b"))
            return now() - start

    assert run(scenario) == 0.0  # no time passed at all
    assert fake.batches == [["a", "b"]]


@pytest.mark.parametrize("delay_s", [0.0, 0.3])
def test_a_first_request_waits_exactly_for_the_delay(delay_s: float) -> None:
    fake = FakeRuntime()

    async def scenario() -> float:
        async with serving(fake, max_batch_size=64, max_queue_delay_s=delay_s) as batcher:
            start = now()
            await batcher.submit("first")  # no history yet: it may have company coming
            return now() - start

    assert run(scenario) == pytest.approx(delay_s)
    assert fake.batches == [["first"]]


def test_the_delay_waits_only_for_as_many_rows_as_recent_batches_had() -> None:
    fake = FakeRuntime()

    async def scenario() -> tuple[float, float]:
        async with serving(fake, max_batch_size=64, max_queue_delay_s=0.3) as batcher:
            await asyncio.gather(*(batcher.submit(i) for i in range(4)))  # a batch of 4 (waits the delay)
            start = now()
            await batcher.submit("lone after four")  # recent batches had 4 rows: waits for company
            after_four = now() - start
            for i in range(4):  # lone batches push the batch of 4 out of the recent window
                await batcher.submit(f"lone {i}")
            start = now()
            await batcher.submit("lone after lone ones")  # recent batches had 1 row: no wait
            return after_four, now() - start

    after_four, after_lone = run(scenario)
    assert after_four == pytest.approx(0.3)
    assert after_lone == 0.0
    assert fake.batches[0] == [0, 1, 2, 3]
    assert all(len(b) == 1 for b in fake.batches[1:])


def test_close_does_not_wait_out_the_delay_window() -> None:
    fake = FakeRuntime()

    async def scenario() -> list[Any]:
        batcher = make_batcher(fake, max_batch_size=64, max_queue_delay_s=WAIT_S)
        batcher.start()
        waiting = asyncio.create_task(batcher.submit("a"))
        await until(lambda: batcher.queue_depth == 1)
        start = now()
        await batcher.close()
        return [now() - start, waiting.result()]

    elapsed, result = run(scenario)
    assert result == ("done", "a")
    assert elapsed == 0.0  # closing ended the window at once


def test_observer_times_come_from_the_batcher_clock() -> None:
    now = [0.0]
    fake = FakeRuntime(held=True)
    recorder = Recorder()

    async def scenario() -> None:
        async with serving(
            fake, max_batch_size=8, observer=recorder, clock=lambda: now[0]
        ) as batcher:
            first = await hold_first(batcher, fake, "a")  # enqueued and started at 0
            now[0] = 1.0
            second = asyncio.create_task(batcher.submit("b"))  # enqueued at 1
            await until(lambda: batcher.queue_depth == 1)
            now[0] = 4.0  # 'a' finishes at 4, 'b' starts at 4 and takes no time
            fake.gate.set()
            await asyncio.gather(first, second)

    run(scenario)
    assert recorder.records == [BatchRecord(1, 1, (0.0,), 4.0), BatchRecord(1, 1, (3.0,), 0.0)]
