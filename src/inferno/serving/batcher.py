"""Dynamic batching: requests queue, each with its own future; workers run batches off the loop.

Pure logic over asyncio — it knows nothing of models or HTTP, and is unit-tested with a
fake ``execute``. One worker runs per model instance; all share one bounded queue.

A worker takes the oldest request, then gathers more until the batch is full or the first
request has waited ``max_queue_delay_s`` (a deadline computed once, from the monotonic
clock). With no delay a worker runs what is queued as soon as it is free, so batches form
by themselves under load while a lone request never waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from inferno.errors import BatchSizeError as BatchSizeError  # re-export
from inferno.errors import DeadlineExceededError, ServiceUnavailableError, UserInputError

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class BatchRecord:
    """What one runtime call did, for statistics."""

    requests: int
    rows: int
    queue_s: tuple[float, ...]
    """How long each request waited in the queue."""
    compute_s: float
    instance: int = 0
    """Which ``execute`` ran the batch (its index in the batcher's list: one per instance), so
    an observer can read that instance's own accounting of the call."""


class BatchObserver(Protocol):
    def on_batch(self, record: BatchRecord) -> None: ...


@dataclass(eq=False)  # identity: the queue removes a cancelled request by identity
class _Pending(Generic[T, R]):
    item: T
    rows: int
    future: asyncio.Future[R]
    enqueued: float
    deadline: float | None


class DynamicBatcher(Generic[T, R]):
    """Batches submitted items and runs them through one ``execute`` per instance.

    ``execute(items) -> results`` runs in a worker thread and must return one result per
    item, in order; anything else fails every request of that batch with
    :class:`BatchSizeError`. An exception from ``execute`` reaches every request of the batch.
    """

    def __init__(
        self,
        executes: Sequence[Callable[[list[T]], Sequence[R]]],
        *,
        max_batch_size: int,
        max_queue_delay_s: float = 0.0,
        max_queue_size: int = 1024,
        observer: BatchObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not executes:
            raise ValueError("a batcher needs at least one execute function (one per instance)")
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self.max_queue_size = max_queue_size
        self._executes = list(executes)
        self._observer = observer
        self._clock = clock
        self._queue: deque[_Pending[T, R]] = deque()
        self._arrived = asyncio.Event()
        self._pool = ThreadPoolExecutor(len(executes), thread_name_prefix="inferno-batch")
        self._workers: list[asyncio.Task[None]] = []
        self._closing = False
        self._running = 0
        self._queued_rows = 0
        self._recent: deque[int] = deque(maxlen=4)  # rows of the last batches

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        """Requests queued or being executed."""
        return len(self._queue) + self._running

    def start(self) -> None:
        """Start one worker task per instance on the running loop."""
        if not self._workers:
            self._workers = [asyncio.create_task(self._work(ex, i), name=f"inferno-batcher-{i}")
                             for i, ex in enumerate(self._executes)]

    async def submit(self, item: T, rows: int = 1, deadline: float | None = None) -> R:
        """Queue ``item`` (``rows`` rows) and wait for its result.

        ``deadline`` is a time on this batcher's clock after which the request is dropped
        with :class:`DeadlineExceededError` instead of run.
        """
        if rows > self.max_batch_size:
            raise UserInputError(f"request batch: expected at most {self.max_batch_size} rows, got {rows}")
        if self._closing:
            raise ServiceUnavailableError("model is unloading or the server is shutting down", 1.0)
        if len(self._queue) >= self.max_queue_size:
            raise ServiceUnavailableError(
                f"queue full: {len(self._queue)} requests waiting (max_queue_size {self.max_queue_size})", 1.0
            )
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        pending = _Pending(item, rows, future, self._clock(), deadline)
        self._queue.append(pending)
        self._queued_rows += rows
        self._arrived.set()
        try:
            if deadline is None:
                return await future
            scope = asyncio.timeout(max(0.0, deadline - self._clock()))
            try:
                async with scope:
                    return await future
            except TimeoutError:
                if not scope.expired():  # a TimeoutError raised by execute itself
                    raise
                raise DeadlineExceededError("request timed out before it was served") from None
        finally:
            if future.cancelled():
                self._discard(pending)

    async def close(self) -> None:
        """Stop taking requests, finish every queued one, then stop the workers."""
        self._closing = True
        self._arrived.set()
        if self._workers:
            await asyncio.gather(*self._workers, return_exceptions=True)
        self._pool.shutdown(wait=True)

    async def _work(self, execute: Callable[[list[T]], Sequence[R]], instance: int) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                if self._closing:
                    return
                self._arrived.clear()
                await self._arrived.wait()
            await self._gather()
            batch = self._take()
            if not batch:
                continue
            rows = sum(p.rows for p in batch)
            self._recent.append(rows)
            self._running += len(batch)
            started = self._clock()
            try:
                if rows > self.max_batch_size:  # the invariant every runtime call relies on
                    raise BatchSizeError(f"batch of {rows} rows exceeds max_batch_size {self.max_batch_size}")
                results = await loop.run_in_executor(self._pool, execute, [p.item for p in batch])
                if len(results) != len(batch):
                    raise BatchSizeError(f"execute returned {len(results)} results for {len(batch)} requests")
            except Exception as exc:
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
            else:
                for p, result in zip(batch, results, strict=True):
                    if not p.future.done():
                        p.future.set_result(result)
            finally:
                self._running -= len(batch)
            if self._observer is not None:
                self._observer.on_batch(BatchRecord(
                    len(batch), rows,
                    tuple(started - p.enqueued for p in batch), self._clock() - started, instance,
                ))

    async def _gather(self) -> None:
        """Wait until a batch is full or the oldest request's delay is spent."""
        if self.max_queue_delay_s <= 0:
            return
        # Wait for as many rows as recent batches had, not always for a full batch: under a
        # steady load of N clients that refills a batch of N, while a lone client (recent
        # batches of 1) never waits.
        target = min(self.max_batch_size, max(self._recent, default=self.max_batch_size))
        deadline = self._queue[0].enqueued + self.max_queue_delay_s
        while not self._closing and self._queued_rows < target:
            remaining = deadline - self._clock()
            if remaining <= 0:
                return
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._arrived.wait()

    def _discard(self, pending: _Pending[T, R]) -> None:
        """Free a cancelled request's queue slot now, not when a worker reaches it."""
        try:
            self._queue.remove(pending)
        except ValueError:
            return  # a worker already took it
        self._queued_rows -= pending.rows

    def _take(self) -> list[_Pending[T, R]]:
        """Pop the oldest requests that fit in one batch; drop the cancelled and the expired."""
        batch: list[_Pending[T, R]] = []
        rows = 0
        now = self._clock()
        while self._queue:
            p = self._queue[0]
            expired = p.deadline is not None and now >= p.deadline
            if not p.future.done() and not expired and rows + p.rows > self.max_batch_size:
                break
            self._queue.popleft()
            self._queued_rows -= p.rows
            if p.future.done():  # cancelled, or timed out while waiting
                continue
            if expired:
                p.future.set_exception(DeadlineExceededError("request timed out in the queue"))
                continue
            batch.append(p)
            rows += p.rows
        return batch
