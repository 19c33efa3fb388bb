"""DynamicBatcher with a fake runtime: plain Python ``execute`` functions that record their batches.

Batches, errors, the queue, cancellation, instances, closing and the observer; the tests of
deadlines and the delay window are in ``test_batcher_time``. Both run on a virtual clock
(``batching.VirtualTimeLoop``): no test measures or waits on real time.
"""

from __future__ import annotations

import asyncio
import random
import threading
from typing import Any

import pytest

from inferno.errors import BatchSizeError, ServiceUnavailableError, UserInputError
from inferno.serving.batcher import DynamicBatcher

from .batching import WAIT_S, FakeRuntime, Recorder, hold_first, run, serving, until
from .batching import batcher as make_batcher


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
        batcher = make_batcher(fake, max_batch_size=2)
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
