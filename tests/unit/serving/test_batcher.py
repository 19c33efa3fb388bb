"""DynamicBatcher with a fake runtime: plain Python ``execute`` functions that record their batches."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest

from inferno.errors import DeadlineExceededError, ServiceUnavailableError, UserInputError
from inferno.serving.batcher import BatchRecord, BatchSizeError, DynamicBatcher

T = TypeVar("T")

WAIT_S = 5.0
"""Upper bound on every wait, so a broken batcher fails a test instead of hanging it."""


class FakeRuntime:
    """An ``execute``: records each batch, answers ``("done", item)`` per item.

    ``held=True`` makes every call wait until ``gate`` is set; ``error`` is raised by the
    next call only; ``surplus`` adds (or, negative, removes) results of the next call only.
    """

    def __init__(self, *, held: bool = False, before: Callable[[], object] | None = None) -> None:
        self.batches: list[list[Any]] = []
        self.gate = threading.Event()
        if not held:
            self.gate.set()
        self.before = before
        self.error: Exception | None = None
        self.surplus = 0

    def __call__(self, items: list[Any]) -> list[Any]:
        self.batches.append(list(items))
        if not self.gate.wait(WAIT_S):
            raise RuntimeError("the test never opened the gate")
        if self.before is not None:
            self.before()
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        results = [("done", item) for item in items]
        surplus, self.surplus = self.surplus, 0
        return results[:surplus] if surplus < 0 else results + [("extra", None)] * surplus


class Recorder:
    def __init__(self) -> None:
        self.records: list[BatchRecord] = []

    def on_batch(self, record: BatchRecord) -> None:
        self.records.append(record)


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(scenario(), 2 * WAIT_S)

    return asyncio.run(bounded())


async def until(condition: Callable[[], object]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition never became true")
        await asyncio.sleep(0.001)


@contextlib.asynccontextmanager
async def serving(
    *executes: FakeRuntime, **options: Any
) -> AsyncIterator[DynamicBatcher[Any, Any]]:
    batcher: DynamicBatcher[Any, Any] = DynamicBatcher(list(executes), **options)
    batcher.start()
    try:
        yield batcher
    finally:
        for execute in executes:
            execute.gate.set()
        await batcher.close()


async def hold_first(
    batcher: DynamicBatcher[Any, Any], fake: FakeRuntime, item: Any = "first", rows: int = 1
) -> asyncio.Task[Any]:
    """Submit ``item`` and wait until it is inside the (held) ``execute``."""
    task = asyncio.create_task(batcher.submit(item, rows))
    await until(lambda: fake.batches)
    return task


def test_needs_at_least_one_execute() -> None:
    with pytest.raises(ValueError, match="at least one execute"):
        DynamicBatcher([], max_batch_size=4)


def test_sequential_requests_each_get_their_own_result() -> None:
    fake = FakeRuntime()

    async def scenario() -> list[Any]:
        async with serving(fake, max_batch_size=4) as batcher:
            return [await batcher.submit(i) for i in range(5)]

    assert run(scenario) == [("done", i) for i in range(5)]
    assert fake.batches == [[i] for i in range(5)]


def test_concurrent_requests_form_one_batch_and_each_result_reaches_its_own_future() -> None:
    fake = FakeRuntime(held=True)

    async def scenario() -> list[Any]:
        async with serving(fake, max_batch_size=64) as batcher:
            first = await hold_first(batcher, fake)
            items = [f"req-{i}" for i in range(10)]
            random.Random(3).shuffle(items)
            tasks = [asyncio.create_task(batcher.submit(item)) for item in items]
            await until(lambda: batcher.queue_depth == 10)
            assert batcher.in_flight == 11
            fake.gate.set()
            results = await asyncio.gather(first, *tasks)
            assert batcher.in_flight == 0
            return [items, results]

    items, results = run(scenario)
    assert results == [("done", "first")] + [("done", item) for item in items]
    assert fake.batches == [["first"], items]


def _greedy(requests: list[tuple[int, int]], limit: int) -> list[list[tuple[int, int]]]:
    """Oldest first, a batch closes at the first request that does not fit."""
    batches: list[list[tuple[int, int]]] = [[]]
    for request in requests:
        if sum(r for _, r in batches[-1]) + request[1] > limit:
            batches.append([])
        batches[-1].append(request)
    return batches


@pytest.mark.parametrize("delay_s", [0.0, 0.05])
def test_no_batch_exceeds_max_batch_size_rows(delay_s: float) -> None:
    rng = random.Random(7)
    requests = [(i, rng.randint(1, 8)) for i in range(40)]
    fake = FakeRuntime(held=True)

    async def scenario() -> list[Any]:
        async with serving(fake, max_batch_size=8, max_queue_delay_s=delay_s) as batcher:
            first = await hold_first(batcher, fake, (-1, 8), rows=8)
            tasks = [asyncio.create_task(batcher.submit(req, rows=req[1])) for req in requests]
            await until(lambda: batcher.queue_depth == len(requests))
            fake.gate.set()
            return await asyncio.gather(first, *tasks)

    results = run(scenario)
    assert results == [("done", (-1, 8))] + [("done", req) for req in requests]
    rows_per_batch = [sum(rows for _, rows in batch) for batch in fake.batches]
    assert max(rows_per_batch) <= 8
    assert sum(rows_per_batch) == 8 + sum(rows for _, rows in requests)
    assert fake.batches[1:] == _greedy(requests, 8)
    assert len(fake.batches) < len(requests)  # they did batch


def test_a_request_with_more_rows_than_a_batch_is_refused() -> None:
    fake = FakeRuntime()

    async def scenario() -> None:
        async with serving(fake, max_batch_size=4) as batcher:
            with pytest.raises(UserInputError, match=r"expected at most 4 rows, got 5"):
                await batcher.submit("big", rows=5)
            assert await batcher.submit("fits", rows=4) == ("done", "fits")

    run(scenario)
    assert fake.batches == [["fits"]]


@pytest.mark.parametrize("surplus", [-1, 1])
def test_wrong_number_of_results_fails_every_request_of_the_batch(surplus: int) -> None:
    fake = FakeRuntime()
    fake.surplus = surplus

    async def scenario() -> list[Any]:
        # a full batch (3 rows) is sent at once; the long delay only guarantees they meet
        async with serving(fake, max_batch_size=3, max_queue_delay_s=WAIT_S) as batcher:
            failed = await asyncio.gather(
                *(batcher.submit(i) for i in range(3)), return_exceptions=True
            )
            return [failed, await asyncio.gather(*(batcher.submit(f"next-{i}") for i in range(3)))]

    failed, after = run(scenario)
    assert fake.batches[0] == [0, 1, 2]
    for outcome in failed:
        assert isinstance(outcome, BatchSizeError)
        assert str(outcome) == f"execute returned {3 + surplus} results for 3 requests"
    assert after == [("done", f"next-{i}") for i in range(3)]


def test_an_exception_in_execute_reaches_every_request_and_the_batcher_keeps_serving() -> None:
    fake = FakeRuntime()
    fake.error = ValueError("runtime exploded")

    async def scenario() -> list[Any]:
        async with serving(fake, max_batch_size=3, max_queue_delay_s=WAIT_S) as batcher:
            failed = await asyncio.gather(
                *(batcher.submit(i) for i in range(3)), return_exceptions=True
            )
            return [failed, await asyncio.gather(*(batcher.submit(f"next-{i}") for i in range(3)))]

    failed, after = run(scenario)
    assert fake.batches == [[0, 1, 2], ["next-0", "next-1", "next-2"]]
    assert all(isinstance(f, ValueError) and str(f) == "runtime exploded" for f in failed)
    assert after == [("done", f"next-{i}") for i in range(3)]


def test_a_timeout_error_from_execute_is_not_mistaken_for_the_deadline() -> None:
    fake = FakeRuntime()
    fake.error = TimeoutError("device watchdog")

    async def scenario() -> None:
        async with serving(fake, max_batch_size=4) as batcher:
            with pytest.raises(TimeoutError, match="device watchdog"):
                await batcher.submit("x", deadline=time.monotonic() + WAIT_S)

    run(scenario)


def test_a_request_whose_deadline_passes_while_it_waits_fails_and_is_never_executed() -> None:
    fake = FakeRuntime(held=True)

    async def scenario() -> list[Any]:
        async with serving(fake, max_batch_size=8) as batcher:
            first = await hold_first(batcher, fake, "slow")
            start = time.monotonic()
            with pytest.raises(DeadlineExceededError):
                await batcher.submit("late", deadline=start + 0.05)
            waited = time.monotonic() - start
            fake.gate.set()
            return [waited, await first, await batcher.submit("after")]

    waited, first, after = run(scenario)
    assert 0.04 <= waited < 0.5
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


def test_a_full_queue_refuses_the_next_request_with_503() -> None:
    fake = FakeRuntime(held=True)

    async def scenario() -> list[Any]:
        async with serving(fake, max_batch_size=1, max_queue_size=3) as batcher:
            first = await hold_first(batcher, fake, "running")
            waiting = [asyncio.create_task(batcher.submit(i)) for i in range(3)]
            await until(lambda: batcher.queue_depth == 3)
            with pytest.raises(ServiceUnavailableError) as refused:
                await batcher.submit("overflow")
            fake.gate.set()
            results = await asyncio.gather(first, *waiting)
            results.append(await batcher.submit("later"))  # room again once drained
            return [refused.value, results]

    refused, results = run(scenario)
    assert refused.http_status == 503
    assert refused.retry_after_s > 0
    assert str(refused) == "queue full: 3 requests waiting (max_queue_size 3)"
    assert results == [("done", x) for x in ["running", 0, 1, 2, "later"]]
    assert "overflow" not in [item for batch in fake.batches for item in batch]


def test_cancelled_requests_do_not_hold_queue_slots() -> None:
    fake = FakeRuntime(held=True)

    async def scenario() -> list[Any]:
        async with serving(fake, max_batch_size=1, max_queue_size=2) as batcher:
            first = await hold_first(batcher, fake, "running")
            gone = [asyncio.create_task(batcher.submit(i)) for i in range(2)]
            await until(lambda: batcher.queue_depth == 2)
            for task in gone:
                task.cancel()
            await asyncio.gather(*gone, return_exceptions=True)
            kept = asyncio.create_task(batcher.submit("kept"))
            await until(lambda: batcher.queue_depth >= 1)
            fake.gate.set()
            return [await first, await kept]

    assert run(scenario) == [("done", "running"), ("done", "kept")]
    assert fake.batches == [["running"], ["kept"]]


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

            start = time.monotonic()
            first = asyncio.create_task(batcher.submit("a"))
            others = asyncio.gather(later("b", 0.05), later("c", 0.45))
            await first
            latency = time.monotonic() - start
            await others
            return latency

    latency = run(scenario)
    assert fake.batches == [["a", "b"], ["c"]]
    assert 0.19 <= latency < 0.4


def test_a_full_batch_does_not_wait_for_the_window() -> None:
    fake = FakeRuntime()

    async def scenario() -> float:
        async with serving(fake, max_batch_size=2, max_queue_delay_s=WAIT_S) as batcher:
            start = time.monotonic()
            await asyncio.gather(batcher.submit("a"), batcher.submit("b"))
            return time.monotonic() - start

    assert run(scenario) < 1.0
    assert fake.batches == [["a", "b"]]


@pytest.mark.parametrize(("delay_s", "low", "high"), [(0.0, 0.0, 0.1), (0.3, 0.29, 0.6)])
def test_a_first_request_waits_exactly_for_the_delay(delay_s: float, low: float, high: float) -> None:
    fake = FakeRuntime()

    async def scenario() -> float:
        async with serving(fake, max_batch_size=64, max_queue_delay_s=delay_s) as batcher:
            start = time.monotonic()
            await batcher.submit("first")  # no history yet: it may have company coming
            return time.monotonic() - start

    assert low <= run(scenario) < high
    assert fake.batches == [["first"]]


def test_the_delay_waits_only_for_as_many_rows_as_recent_batches_had() -> None:
    fake = FakeRuntime()

    async def scenario() -> tuple[float, float]:
        async with serving(fake, max_batch_size=64, max_queue_delay_s=0.3) as batcher:
            await asyncio.gather(*(batcher.submit(i) for i in range(4)))  # a batch of 4 (waits the delay)
            start = time.monotonic()
            await batcher.submit("lone after four")  # recent batches had 4 rows: waits for company
            after_four = time.monotonic() - start
            for i in range(4):  # lone batches push the batch of 4 out of the recent window
                await batcher.submit(f"lone {i}")
            start = time.monotonic()
            await batcher.submit("lone after lone ones")  # recent batches had 1 row: no wait
            return after_four, time.monotonic() - start

    after_four, after_lone = run(scenario)
    assert 0.29 <= after_four < 0.6
    assert after_lone < 0.1
    assert fake.batches[0] == [0, 1, 2, 3]
    assert all(len(b) == 1 for b in fake.batches[1:])


def test_several_instances_run_batches_concurrently() -> None:
    meeting = threading.Barrier(3, timeout=WAIT_S)  # passes only if all three run at once
    fakes = [FakeRuntime(before=meeting.wait) for _ in range(3)]

    async def scenario() -> list[Any]:
        async with serving(*fakes, max_batch_size=1) as batcher:
            return list(await asyncio.gather(*(batcher.submit(i) for i in range(3))))

    assert run(scenario) == [("done", i) for i in range(3)]
    assert sorted(len(f.batches) for f in fakes) == [1, 1, 1]
    assert sorted(item for f in fakes for batch in f.batches for item in batch) == [0, 1, 2]


def test_close_finishes_every_queued_request_then_refuses_new_ones() -> None:
    fake = FakeRuntime(held=True)

    async def scenario() -> list[Any]:
        batcher: DynamicBatcher[Any, Any] = DynamicBatcher([fake], max_batch_size=2)
        batcher.start()
        first = await hold_first(batcher, fake, "running")
        queued = [asyncio.create_task(batcher.submit(i)) for i in range(5)]
        await until(lambda: batcher.queue_depth == 5)
        closing = asyncio.create_task(batcher.close())
        await asyncio.sleep(0)
        with pytest.raises(ServiceUnavailableError, match="shutting down"):
            await batcher.submit("during")
        fake.gate.set()
        await closing
        results = [await task for task in [first, *queued]]  # already done: close waited for them
        with pytest.raises(ServiceUnavailableError) as refused:
            await batcher.submit("after")
        return [results, refused.value.http_status]

    results, status = run(scenario)
    assert results == [("done", x) for x in ["running", 0, 1, 2, 3, 4]]
    assert status == 503
    assert fake.batches == [["running"], [0, 1], [2, 3], [4]]


def test_close_does_not_wait_out_the_delay_window() -> None:
    fake = FakeRuntime()

    async def scenario() -> list[Any]:
        batcher: DynamicBatcher[Any, Any] = DynamicBatcher(
            [fake], max_batch_size=64, max_queue_delay_s=WAIT_S
        )
        batcher.start()
        waiting = asyncio.create_task(batcher.submit("a"))
        await until(lambda: batcher.queue_depth == 1)
        start = time.monotonic()
        await batcher.close()
        return [time.monotonic() - start, waiting.result()]

    elapsed, result = run(scenario)
    assert result == ("done", "a")
    assert elapsed < 1.0


def test_a_cancelled_waiting_request_is_skipped() -> None:
    fake = FakeRuntime(held=True)

    async def scenario() -> list[Any]:
        async with serving(fake, max_batch_size=8) as batcher:
            first = await hold_first(batcher, fake, "running")
            doomed = asyncio.create_task(batcher.submit("doomed"))
            kept = asyncio.create_task(batcher.submit("kept"))
            await until(lambda: batcher.queue_depth == 2)
            doomed.cancel()
            with pytest.raises(asyncio.CancelledError):
                await doomed
            fake.gate.set()
            return [await first, await kept]

    assert run(scenario) == [("done", "running"), ("done", "kept")]
    assert fake.batches == [["running"], ["kept"]]


def test_the_observer_gets_one_record_per_batch_that_adds_up() -> None:
    rng = random.Random(11)
    requests = [(i, rng.randint(1, 5)) for i in range(30)]
    fake = FakeRuntime(held=True)
    recorder = Recorder()

    async def scenario() -> None:
        async with serving(fake, max_batch_size=8, observer=recorder) as batcher:
            first = await hold_first(batcher, fake, (-1, 1))
            tasks = [asyncio.create_task(batcher.submit(req, rows=req[1])) for req in requests]
            await until(lambda: batcher.queue_depth == len(requests))
            fake.gate.set()
            await asyncio.gather(first, *tasks)

    run(scenario)
    records = recorder.records
    assert [(r.requests, r.rows) for r in records] == [
        (len(batch), sum(rows for _, rows in batch)) for batch in fake.batches
    ]
    assert sum(r.requests for r in records) == len(requests) + 1
    assert sum(r.rows for r in records) == 1 + sum(rows for _, rows in requests)
    assert all(
        len(r.queue_s) == r.requests and min(r.queue_s) >= 0 and r.compute_s >= 0 for r in records
    )


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


def test_the_record_names_the_instance_that_ran_the_batch() -> None:
    first, second = FakeRuntime(held=True), FakeRuntime(held=True)
    recorder = Recorder()
    rows = {"x": 1, "y": 3}

    async def scenario() -> None:
        async with serving(first, second, max_batch_size=4, observer=recorder) as batcher:
            x = asyncio.create_task(batcher.submit("x", rows["x"]))
            await until(lambda: first.batches or second.batches)
            y = asyncio.create_task(batcher.submit("y", rows["y"]))
            await until(lambda: first.batches and second.batches)  # one batch inside each
            first.gate.set()
            second.gate.set()
            await asyncio.gather(x, y)

    run(scenario)
    ran = {i: [rows[item] for batch in fake.batches for item in batch] for i, fake in enumerate((first, second))}
    assert sorted(ran[0] + ran[1]) == [1, 3]
    assert {r.instance: [r.rows] for r in recorder.records} == ran


def test_a_failed_batch_is_observed_too() -> None:
    fake = FakeRuntime()
    fake.error = ValueError("boom")
    recorder = Recorder()

    async def scenario() -> None:
        async with serving(fake, max_batch_size=4, observer=recorder) as batcher:
            with pytest.raises(ValueError, match="boom"):
                await batcher.submit("x", rows=3)

    run(scenario)
    assert [(r.requests, r.rows) for r in recorder.records] == [(1, 3)]


def test_a_request_past_its_deadline_on_arrival_is_never_executed() -> None:
    fake = FakeRuntime()

    async def scenario() -> int:
        async with serving(fake, max_batch_size=4) as batcher:
            with pytest.raises(DeadlineExceededError):
                await batcher.submit("stale", deadline=time.monotonic() - 1.0)
            await batcher.submit("fresh")
            return batcher.queue_depth

    assert run(scenario) == 0
    assert fake.batches == [["fresh"]]
