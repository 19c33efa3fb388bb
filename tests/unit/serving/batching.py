"""What the batcher tests run on: a fake runtime, on the virtual-time loop of
:mod:`tests.unit.virtual_time`. The batcher under test gets ``loop.time`` as its ``clock``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from inferno.serving.batcher import BatchRecord, DynamicBatcher

from ..virtual_time import WAIT_S, Gate, now, run, until

__all__ = [
    "WAIT_S",
    "FakeRuntime",
    "Gate",
    "Recorder",
    "batcher",
    "hold_first",
    "now",
    "run",
    "serving",
    "until",
]


class FakeRuntime:
    """An ``execute``: records each batch, answers ``("done", item)`` per item.

    ``held=True`` makes every call wait until ``gate`` is set; ``error`` is raised by the
    next call only; ``surplus`` adds (or, negative, removes) results of the next call only.
    """

    def __init__(self, *, held: bool = False, before: Callable[[], object] | None = None) -> None:
        self.batches: list[list[Any]] = []
        self.gate = Gate()
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


def batcher(*executes: FakeRuntime, **options: Any) -> DynamicBatcher[Any, Any]:
    """A batcher over ``executes`` on the running loop's clock (unless ``clock`` is given)."""
    options.setdefault("clock", asyncio.get_running_loop().time)
    return DynamicBatcher(list(executes), **options)


@contextlib.asynccontextmanager
async def serving(
    *executes: FakeRuntime, **options: Any
) -> AsyncIterator[DynamicBatcher[Any, Any]]:
    started = batcher(*executes, **options)
    started.start()
    try:
        yield started
    finally:
        for execute in executes:
            execute.gate.set()
        await started.close()


async def hold_first(
    batcher: DynamicBatcher[Any, Any], fake: FakeRuntime, item: Any = "first", rows: int = 1
) -> asyncio.Task[Any]:
    """Submit ``item`` and wait until it is inside the (held) ``execute``."""
    task = asyncio.create_task(batcher.submit(item, rows))
    await until(lambda: fake.batches)
    return task
