"""The two ways of loading a server, each measuring one point (or this process's share of it).

- Closed loop (``concurrency``): N workers, each sends its next request as soon as the last
  one returns. Measures what the server sustains with N requests outstanding.
- Open loop (``rate``): requests arrive as a Poisson process at λ per second whether or not
  earlier ones have returned, as independent users would. Arrivals are scheduled against the
  clock, so lateness does not accumulate; the rate actually offered is reported beside λ, so
  a generator that cannot keep up shows instead of passing for a slow server.

Both warm up first (not recorded), measure for a fixed time or until ``max_requests`` are
recorded, then stop by themselves: every request has a timeout and every wait a bound. With
``max_requests`` no more than that many requests are sent in the measured window, so the
generator's count is the server's. Requests go through a *sender*: HTTP/1.1 over lean
keep-alive connections (:mod:`inferno.protocol.aio`) or gRPC
(:mod:`inferno.bench.grpc_client`). What one process recorded is an :class:`Outcome`; the
outcomes of several client processes merge into one :class:`LoadPoint`.

Time stamps come from ``now`` (:func:`time.perf_counter`, not ``loop.time()``: uvloop's has
a resolution of a millisecond); waits are relative, so a virtual-time event loop whose clock
is passed as ``now`` drives the whole schedule exactly (the unit tests do).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from inferno.bench.config import MAX_IN_FLIGHT
from inferno.bench.stats import Latency, LoadPoint, Mode
from inferno.protocol.address import Address
from inferno.protocol.aio import Failure, HttpSender

TICK_S = 0.25
DRAIN_S = 5.0
"""After the window, in-flight requests get at most this long (or the timeout) to finish."""
EXAMPLES = 3


@dataclass(frozen=True)
class Progress:
    """Where a point stands, a few times a second."""

    successes: int
    errors: int
    fraction: float
    """Of the point done (warm-up included), 0..1."""
    recording_s: float
    """Seconds since the measured window began; negative while warming up."""

    def line(self, label: str) -> str:
        if self.recording_s < 0:
            return f"{label}: warming up"
        rps = self.successes / max(self.recording_s, 1e-9)
        return f"{label}: {rps:,.0f} req/s, {self.errors} errors"


Tick = Callable[[Progress], None]
Now = Callable[[], float]


@dataclass(frozen=True)
class Target:
    """Where and what to send, and the limits of a point. Picklable: client processes get it."""

    protocol: Literal["http", "grpc"]
    address: Address | str
    """HTTP: the server's Address; gRPC: ``host:port``."""
    requests: tuple[bytes, ...]
    """Cycled through. HTTP: whole requests (head and body); gRPC: serialized ModelInferRequests."""
    warmup_s: float
    duration_s: float
    max_requests: int | None
    timeout_s: float
    token: str | None = None
    """gRPC: sent as ``authorization`` metadata (HTTP carries it in each request's head)."""


class Sender(Protocol):
    async def send(self, index: int) -> Failure | None:
        """Send request ``index`` (cycled); None on success, else ``(kind, message)``."""
        ...

    async def aclose(self) -> None: ...


def open_sender(target: Target) -> Sender:
    """The sender for ``target``'s protocol (one per point and process)."""
    if target.protocol == "grpc":
        from inferno.bench.grpc_client import GrpcSender

        return GrpcSender(str(target.address), target.requests, target.timeout_s, target.token)
    if not isinstance(target.address, Address):
        raise TypeError(f"HTTP target: expected an Address, got {target.address!r}")
    return HttpSender(target.address, target.requests, target.timeout_s)


@dataclass(frozen=True)
class Share:
    """This process's part of a point: its first request index, its bound, and when to begin."""

    offset: int = 0
    """Index of this process's first worker (closed loop) or its seed's salt (open loop)."""
    max_requests: int | None = None
    begin: float | None = None
    """``time.perf_counter()`` at which the point starts (so processes start together)."""


@dataclass
class Outcome:
    """What one process recorded for one point. Picklable: it travels back to the parent."""

    latencies: np.ndarray
    """Seconds, of successful requests."""
    kinds: dict[str, int]
    examples: dict[str, list[str]]
    window_s: float
    sent: int | None = None
    """Open loop: arrivals in the measured window."""
    cpu_share: float | None = None
    """CPU seconds the event loop's thread used per second of the point (warm-up included)."""

    @property
    def errors(self) -> int:
        return sum(self.kinds.values())


def merge(mode: Mode, level: float, outcomes: list[Outcome]) -> LoadPoint:
    """One point from the outcomes of the processes that shared it (their windows overlap)."""
    latencies = np.concatenate([o.latencies for o in outcomes]) if outcomes else np.array([])
    kinds: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    for outcome in outcomes:
        kinds.update(outcome.kinds)
        for kind, messages in outcome.examples.items():
            seen = examples.setdefault(kind, [])
            seen += [m for m in messages if m not in seen][: EXAMPLES - len(seen)]
    window = max((o.window_s for o in outcomes), default=0.0)
    errors = sum(kinds.values())
    offered = None
    if mode == "rate":
        window = max(window, 1e-9)
        offered = sum(o.sent or 0 for o in outcomes) / window
    shares = [o.cpu_share for o in outcomes if o.cpu_share is not None]
    return LoadPoint(
        mode=mode,
        level=level,
        requests=int(latencies.size) + errors,
        errors=errors,
        duration_s=window,
        latency_ms=Latency.of(latencies),
        offered_rps=offered,
        error_kinds=dict(kinds),
        error_examples={k: tuple(v) for k, v in examples.items()},
        clients=len(outcomes),
        client_cpu=max(shares) if shares else None,
    )


@dataclass
class Tally:
    """What one point recorded in this process: success latencies (seconds) and errors by kind."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.latencies) + self.errors

    def fail(self, kind: str, message: str, count: int = 1) -> None:
        self.errors += count
        self.kinds[kind] += count
        seen = self.examples.setdefault(kind, [])
        if len(seen) < EXAMPLES and message not in seen:
            seen.append(message)

    def record(self, failure: Failure | None, seconds: float) -> None:
        """One finished request: its latency when it succeeded, else its failure."""
        if failure is None:
            self.latencies.append(seconds)
        else:
            self.fail(*failure)

    def outcome(self, window_s: float, cpu_share: float | None, sent: int | None = None) -> Outcome:
        return Outcome(
            latencies=np.asarray(self.latencies, dtype=np.float64),
            kinds=dict(self.kinds),
            examples={k: list(v) for k, v in self.examples.items()},
            window_s=window_s,
            sent=sent,
            cpu_share=cpu_share,
        )


class _Clock:
    """The point's time line in this process, and the CPU its event loop's thread used.

    The thread's CPU time, not the process's: the loop thread is what saturates (gRPC's
    polling threads, a progress bar or a server in the same process do not slow it down).
    """

    def __init__(self, target: Target, share: Share, now: Now) -> None:
        self.now = now
        self.begin = self.now() if share.begin is None else share.begin
        self.record_from = self.begin + target.warmup_s
        self.end = self.record_from + target.duration_s
        self.cpu = time.thread_time()

    async def start(self) -> None:
        delay = self.begin - self.now()
        if delay > 0:
            await asyncio.sleep(delay)
        self.cpu = time.thread_time()

    def cpu_share(self) -> float:
        elapsed = self.now() - self.begin
        return (time.thread_time() - self.cpu) / elapsed if elapsed > 0 else 0.0


def poisson_arrivals(rate: float, seed: int | list[int]) -> Iterator[float]:
    """Endless arrival times (seconds from 0) of a Poisson process at ``rate`` per second."""
    rng = np.random.default_rng(seed)
    t = 0.0
    while True:
        times = t + np.cumsum(rng.exponential(1.0 / rate, 4096))
        t = float(times[-1])
        yield from times.tolist()


async def closed_loop(
    sender: Sender,
    target: Target,
    concurrency: int,
    tick: Tick,
    share: Share | None = None,
    now: Now = time.perf_counter,
) -> Outcome:
    """``concurrency`` workers sending back to back; see the module docstring."""
    share = share or Share(max_requests=target.max_requests)
    tally = Tally()
    clock = _Clock(target, share, now)
    await clock.start()
    record_from, end = clock.record_from, clock.end
    stopped_at: list[float] = []
    done = asyncio.Event()
    limit = share.max_requests
    reserved = 0  # measured requests sent: with a limit, never more than it

    async def worker(index: int) -> None:
        nonlocal reserved
        while not done.is_set():
            start = clock.now()
            if limit is not None and start >= record_from:
                if reserved >= limit:
                    break
                reserved += 1
            failure = await sender.send(index)
            index += concurrency
            finish = clock.now()
            if done.is_set() or start < record_from:
                continue
            if finish > end:
                done.set()
                break
            tally.record(failure, finish - start)
            if limit is not None and tally.count >= limit:
                stopped_at.append(finish)
                done.set()

    workers = [asyncio.create_task(worker(share.offset + i)) for i in range(concurrency)]
    await _watch(done, clock, tally, target, tick, limit)
    cpu = clock.cpu_share()
    await _drain(workers, target)
    window = (stopped_at[0] if stopped_at else end) - record_from
    return tally.outcome(window, cpu)


async def open_loop(
    sender: Sender,
    target: Target,
    rate: float,
    seed: int | list[int],
    tick: Tick,
    share: Share | None = None,
    now: Now = time.perf_counter,
) -> Outcome:
    """Poisson arrivals at ``rate``/s, at most ``MAX_IN_FLIGHT`` outstanding; see the module docstring."""
    share = share or Share(max_requests=target.max_requests)
    tally = Tally()
    done = asyncio.Event()
    in_flight: set[asyncio.Task[None]] = set()
    clock = _Clock(target, share, now)
    await clock.start()
    begin = clock.begin
    end_offset = target.warmup_s + target.duration_s
    sent, window = 0, target.duration_s  # arrivals in the measured window, and its length
    limit = share.max_requests

    async def one(index: int, record: bool) -> None:
        start = clock.now()
        failure = await sender.send(index)
        if record:
            tally.record(failure, clock.now() - start)

    async def issue() -> None:
        nonlocal sent, window
        for issued, offset in enumerate(poisson_arrivals(rate, seed)):
            if offset >= end_offset or done.is_set():
                break
            delay = begin + offset - clock.now()
            if delay > 0:
                await asyncio.sleep(delay)
            elif issued % 64 == 0:
                await asyncio.sleep(0)  # running late: still let responses in
            record = offset >= target.warmup_s
            if record:
                if sent == limit:
                    window = offset - target.warmup_s
                    break
                sent += 1
            if len(in_flight) >= MAX_IN_FLIGHT:
                if record:
                    tally.fail("client saturated", f"{MAX_IN_FLIGHT} requests already outstanding")
                continue
            task = asyncio.create_task(one(share.offset + issued, record))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        done.set()

    issuer = asyncio.create_task(issue())
    await _watch(done, clock, tally, target, tick, limit)
    cpu = clock.cpu_share()
    await _drain([issuer, *in_flight], target)
    if sent > tally.count:  # cancelled by the drain: they arrived, so they count
        tally.fail("unfinished", "still outstanding when the run ended", sent - tally.count)
    return tally.outcome(max(window, 1e-9), cpu, sent)


async def run_point(
    target: Target,
    mode: Mode,
    level: float,
    seed: int | list[int],
    tick: Tick,
    share: Share | None = None,
) -> Outcome:
    """One point (or this process's share of it) on a sender of its own."""
    sender = open_sender(target)
    try:
        if mode == "concurrency":
            return await closed_loop(sender, target, int(level), tick, share)
        return await open_loop(sender, target, level, seed, tick, share)
    finally:
        await sender.aclose()


async def _watch(
    done: asyncio.Event,
    clock: _Clock,
    tally: Tally,
    target: Target,
    tick: Tick,
    limit: int | None,
) -> None:
    """Report progress until ``done`` or the end of the window, then set ``done``."""
    begin, end = clock.begin, clock.end
    while not done.is_set():
        now = clock.now()
        if now >= end:
            break
        fraction = (now - begin) / (end - begin)
        if limit:
            fraction = max(fraction, tally.count / limit)
        tick(Progress(len(tally.latencies), tally.errors, fraction, now - clock.record_from))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout=min(TICK_S, end - now))
    done.set()
    tick(Progress(len(tally.latencies), tally.errors, 1.0, clock.now() - clock.record_from))


async def _drain(tasks: list[asyncio.Task[None]], target: Target) -> None:
    """Give in-flight requests a bounded time to finish, then cancel what is left."""
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=min(DRAIN_S, target.timeout_s) + 0.5)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=1.0)
