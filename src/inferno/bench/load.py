"""The two ways of loading a server, each measuring one point.

- Closed loop (``concurrency``): N workers, each sends its next request as soon as the last
  one returns. Measures what the server sustains with N requests outstanding.
- Open loop (``rate``): requests arrive as a Poisson process at λ per second whether or not
  earlier ones have returned, as independent users would. Arrivals are scheduled against the
  clock, so lateness does not accumulate; the rate actually offered is reported beside λ, so
  a generator that cannot keep up shows instead of passing for a slow server.

Both warm up first (not recorded), measure for a fixed time or until ``max_requests`` are
recorded, then stop by themselves: every request has a timeout and every wait a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import aiohttp
import numpy as np

from inferno.bench.config import MAX_IN_FLIGHT
from inferno.bench.stats import Latency, LoadPoint, Mode

Tick = Callable[[str, float], None]
"""Called a few times a second with a status line and the fraction of the point done."""

TICK_S = 0.25
DRAIN_S = 5.0
"""After the window, in-flight requests get at most this long (or the timeout) to finish."""
EXAMPLES = 3


@dataclass(frozen=True)
class Target:
    """Where and how to send: the infer URL, headers, the bodies to cycle through, limits."""

    url: str
    headers: dict[str, str]
    bodies: tuple[bytes, ...]
    warmup_s: float
    duration_s: float
    max_requests: int | None
    timeout_s: float


class Tally:
    """What one point recorded: success latencies (seconds) and errors by kind."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors = 0
        self.kinds: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}

    @property
    def count(self) -> int:
        return len(self.latencies) + self.errors

    def fail(self, kind: str, message: str, count: int = 1) -> None:
        self.errors += count
        self.kinds[kind] += count
        seen = self.examples.setdefault(kind, [])
        if len(seen) < EXAMPLES and message not in seen:
            seen.append(message)

    def point(
        self, mode: Mode, level: float, duration_s: float, offered_rps: float | None = None
    ) -> LoadPoint:
        return LoadPoint(
            mode=mode,
            level=level,
            requests=self.count,
            errors=self.errors,
            duration_s=duration_s,
            latency_ms=Latency.of(self.latencies),
            offered_rps=offered_rps,
            error_kinds=dict(self.kinds),
            error_examples={k: tuple(v) for k, v in self.examples.items()},
        )


def new_session(target: Target, connections: int) -> aiohttp.ClientSession:
    """One keep-alive session; no cookies, no decompression, nothing the generator does not need."""
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=0, ttl_dns_cache=None)
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=target.timeout_s),
        headers=target.headers,
    )


async def send(
    session: aiohttp.ClientSession, target: Target, body: bytes
) -> tuple[str, str] | None:
    """POST one body; None on HTTP 200, else ``(kind, message)``. The response is read whole."""
    try:
        async with session.post(target.url, data=body, allow_redirects=False) as resp:
            payload = await resp.read()
            if resp.status == 200:
                return None
            return f"HTTP {resp.status}", " ".join(payload[:200].decode("utf-8", "replace").split())
    except TimeoutError:
        return "timeout", f"no answer within {target.timeout_s:g} s"
    except (aiohttp.ClientError, OSError) as exc:
        return type(exc).__name__, (str(exc) or type(exc).__name__)[:200]


def poisson_arrivals(rate: float, seed: int | list[int]) -> Iterator[float]:
    """Endless arrival times (seconds from 0) of a Poisson process at ``rate`` per second."""
    rng = np.random.default_rng(seed)
    t = 0.0
    while True:
        times = t + np.cumsum(rng.exponential(1.0 / rate, 4096))
        t = float(times[-1])
        yield from times.tolist()


async def closed_loop(
    session: aiohttp.ClientSession, target: Target, concurrency: int, tick: Tick
) -> LoadPoint:
    """``concurrency`` workers sending back to back; see the module docstring."""
    tally, bodies = Tally(), target.bodies
    begin = time.perf_counter()
    record_from = begin + target.warmup_s
    end = record_from + target.duration_s
    stopped_at: list[float] = []
    done = asyncio.Event()
    limit = target.max_requests

    async def worker(index: int) -> None:
        while not done.is_set():
            body = bodies[index % len(bodies)]
            index += concurrency
            start = time.perf_counter()
            failure = await send(session, target, body)
            finish = time.perf_counter()
            if done.is_set() or start < record_from:
                continue
            if finish > end:
                done.set()
                break
            if failure is None:
                tally.latencies.append(finish - start)
            else:
                tally.fail(*failure)
            if limit is not None and tally.count >= limit:
                stopped_at.append(finish)
                done.set()

    workers = [asyncio.create_task(worker(i)) for i in range(concurrency)]
    await _watch(done, begin, end, tally, f"concurrency {concurrency}", target, tick)
    await _drain(workers, target)
    window = (stopped_at[0] if stopped_at else end) - record_from
    return tally.point("concurrency", concurrency, window)


async def open_loop(
    session: aiohttp.ClientSession, target: Target, rate: float, seed: int, tick: Tick
) -> LoadPoint:
    """Poisson arrivals at ``rate``/s, at most ``MAX_IN_FLIGHT`` outstanding; see the module docstring."""
    tally, bodies = Tally(), target.bodies
    done = asyncio.Event()
    in_flight: set[asyncio.Task[None]] = set()
    begin = time.perf_counter()
    end_offset = target.warmup_s + target.duration_s
    sent, window = 0, target.duration_s  # arrivals in the measured window, and its length

    async def one(body: bytes, record: bool) -> None:
        start = time.perf_counter()
        failure = await send(session, target, body)
        if not record:
            return
        if failure is None:
            tally.latencies.append(time.perf_counter() - start)
        else:
            tally.fail(*failure)

    async def issue() -> None:
        nonlocal sent, window
        for issued, offset in enumerate(poisson_arrivals(rate, seed)):
            if offset >= end_offset or done.is_set():
                break
            delay = begin + offset - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif issued % 64 == 0:
                await asyncio.sleep(0)  # running late: still let responses in
            record = offset >= target.warmup_s
            if record:
                if sent == target.max_requests:
                    window = offset - target.warmup_s
                    break
                sent += 1
            if len(in_flight) >= MAX_IN_FLIGHT:
                if record:
                    tally.fail("client saturated", f"{MAX_IN_FLIGHT} requests already outstanding")
                continue
            task = asyncio.create_task(one(bodies[issued % len(bodies)], record))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        done.set()

    issuer = asyncio.create_task(issue())
    await _watch(done, begin, begin + end_offset, tally, f"rate {rate:g}/s", target, tick)
    await _drain([issuer, *in_flight], target)
    if sent > tally.count:  # cancelled by the drain: they arrived, so they count
        tally.fail("unfinished", "still outstanding when the run ended", sent - tally.count)
    window = max(window, 1e-9)
    return tally.point("rate", rate, window, offered_rps=sent / window)


async def _watch(
    done: asyncio.Event,
    begin: float,
    end: float,
    tally: Tally,
    label: str,
    target: Target,
    tick: Tick,
) -> None:
    """Report progress until ``done`` or the end of the window, then set ``done``."""
    record_from = begin + target.warmup_s
    while not done.is_set():
        now = time.perf_counter()
        if now >= end:
            break
        fraction = (now - begin) / (end - begin)
        if target.max_requests:
            fraction = max(fraction, tally.count / target.max_requests)
        if now < record_from:
            tick(f"{label}: warming up", fraction)
        else:
            rps = len(tally.latencies) / max(now - record_from, 1e-9)
            tick(f"{label}: {rps:,.0f} req/s, {tally.errors} errors", fraction)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout=min(TICK_S, end - now))
    done.set()
    tick(f"{label}: finishing", 1.0)


async def _drain(tasks: list[asyncio.Task[None]], target: Target) -> None:
    """Give in-flight requests a bounded time to finish, then cancel what is left."""
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=min(DRAIN_S, target.timeout_s) + 0.5)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=1.0)
