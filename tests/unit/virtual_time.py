"""An event loop whose clock is virtual, for tests of code that schedules on ``loop.time()``.

``VirtualTimeLoop.time()`` starts at 0 and moves only when the loop has nothing to do: then it
jumps to the next timer. So ``asyncio.sleep(0.3)`` takes no real time, and a duration measured
on ``loop.time()`` is exact, whatever the machine's load. A worker thread (``run_in_executor``)
that is running freezes the virtual clock until it hands its result back, since the loop
cannot know how long it will take; one parked at a closed ``Gate`` does not, since it waits
for the test, not for time. Real sockets do not mix with it: time would jump past a reply that
is on its way, so what runs on it talks to fakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import selectors
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

T = TypeVar("T")

WAIT_S = 5.0
"""Upper bound on every wait, so broken code fails a test instead of hanging it."""

_POLL_S = 0.005
"""Real seconds the loop waits at a time while a worker thread runs (virtual time stands)."""


class _Parking:
    """How many worker threads wait at a closed gate, and the loop to wake when one parks."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.parked = 0
        self.loop: asyncio.AbstractEventLoop | None = None

    def park(self) -> None:
        with self.lock:
            self.parked += 1
            loop = self.loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to wake
                loop.call_soon_threadsafe(lambda: None)  # re-count: time may move now


PARKING = _Parking()


class Gate:
    """A ``threading.Event`` that a worker thread waits at without freezing virtual time.

    Opening it counts its waiters as running again at once, in the loop's own thread, so
    the loop never jumps ahead while they wake up.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._waiting = 0

    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        with self._lock:
            if self._event.is_set():
                return
            with PARKING.lock:
                PARKING.parked -= self._waiting
            self._waiting = 0
            self._event.set()

    def wait(self, timeout: float) -> bool:
        with self._lock:
            if self._event.is_set():
                return True
            self._waiting += 1
        PARKING.park()
        if self._event.wait(timeout):
            return True
        with self._lock:  # never opened: this thread runs again (and fails its call)
            if not self._event.is_set():
                self._waiting -= 1
                with PARKING.lock:
                    PARKING.parked -= 1
        return False


class _JumpingSelector:
    """The loop's selector: where the loop would sleep with nothing running, it advances time."""

    def __init__(self, inner: selectors.BaseSelector, loop: VirtualTimeLoop) -> None:
        self._inner = inner
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is not None and timeout <= 0:
            return self._inner.select(0)
        if self._loop.threads_running():
            return self._inner.select(_POLL_S)  # a result is coming: wait for it in real time
        events = self._inner.select(0)
        if events:
            return events
        if timeout is None:  # no timer: only a thread's call (or a parked one's) can wake it
            return self._inner.select(_POLL_S)
        self._loop.advance(timeout)
        return []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        super().__init__()
        self._now = 0.0
        self._in_executor = 0
        self._selector = _JumpingSelector(self._selector, self)  # type: ignore[has-type]
        PARKING.loop = self

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def threads_running(self) -> bool:
        with PARKING.lock:
            return self._in_executor > PARKING.parked

    def run_in_executor(
        self, executor: Executor | None, func: Callable[..., T], *args: Any
    ) -> asyncio.Future[T]:
        future = super().run_in_executor(executor, func, *args)
        self._in_executor += 1
        future.add_done_callback(self._finished)
        return future

    def _finished(self, _: asyncio.Future[Any]) -> None:
        self._in_executor -= 1


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    """Run ``scenario`` on a fresh virtual-time loop, bounded by ``2 * WAIT_S`` of its time."""

    async def bounded() -> T:
        return await asyncio.wait_for(scenario(), 2 * WAIT_S)

    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(bounded())


def now() -> float:
    """The running loop's (virtual) time: the clock the batchers under test use."""
    return asyncio.get_running_loop().time()


async def until(condition: Callable[[], object]) -> None:
    deadline = now() + WAIT_S
    while not condition():
        if now() > deadline:
            raise AssertionError("condition never became true")
        await asyncio.sleep(0.001)
