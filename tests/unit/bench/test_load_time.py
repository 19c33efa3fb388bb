"""The load loops' schedule on a virtual clock: windows, bounds and the end of a run, exactly.

The loops take their time stamps from ``now``, here the clock of
:class:`~tests.unit.virtual_time.VirtualTimeLoop`, which their waits run on: a fake sender's
latency is exact and no assertion depends on how loaded the machine is. What the real sender does on a socket
(timeouts, errors, keep-alive) is tested against a fake server in ``test_load.py``.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from inferno.bench import load
from inferno.bench.load import Progress, Target, closed_loop, merge, open_loop, poisson_arrivals
from inferno.protocol.aio import Failure

from ..virtual_time import now, run


class FakeSender:
    """Answers each request after ``latency_s`` of loop time; ``None`` never answers."""

    def __init__(self, latency_s: float | None) -> None:
        self.latency_s = latency_s
        self.sent: list[int] = []

    async def send(self, index: int) -> Failure | None:
        self.sent.append(index)
        if self.latency_s is None:
            await asyncio.Event().wait()  # a server that never replies (and no timeout)
        else:
            await asyncio.sleep(self.latency_s)
        return None

    async def aclose(self) -> None:
        pass


def _target(**fields: object) -> Target:
    settings: dict[str, object] = {
        "protocol": "http",
        "address": "unused",
        "requests": (b"",),
        "warmup_s": 0.1,
        "duration_s": 30.0,
        "max_requests": None,
        "timeout_s": 10.0,
        **fields,
    }
    return Target(**settings)  # type: ignore[arg-type]


def _ignore(_: Progress) -> None:
    pass


def test_max_requests_ends_the_closed_loop_window_at_the_last_request() -> None:
    # binary fractions, so that virtual time adds up exactly
    target = _target(max_requests=25, warmup_s=8 / 64)
    sender = FakeSender(1 / 64)
    point = merge("concurrency", 8, [run(lambda: closed_loop(sender, target, 8, _ignore, now=now))])
    assert point.requests == 25
    # 8 workers from the end of the warm-up: three rounds of 8 and one request more
    assert point.duration_s == 4 / 64
    assert point.duration_s < target.duration_s
    assert len(sender.sent) == 8 * 8 + 25  # eight warm-up requests per worker, then the limit


def test_max_requests_ends_the_open_loop_window_at_the_next_arrival() -> None:
    target = _target(max_requests=40)
    seed = 3
    outcome = run(lambda: open_loop(FakeSender(0.001), target, 500.0, seed, _ignore, now=now))
    point = merge("rate", 500.0, [outcome])
    measured = (t for t in poisson_arrivals(500.0, seed) if t >= target.warmup_s)
    after_limit = next(itertools.islice(measured, 40, None))
    assert point.requests == 40 and point.errors == 0
    assert point.duration_s == pytest.approx(after_limit - target.warmup_s)
    assert point.duration_s < 5


def test_a_server_that_never_answers_still_ends_the_run() -> None:
    target = _target(warmup_s=0.0, duration_s=1.0, timeout_s=0.2)

    async def timed() -> tuple[float, object]:
        began = now()
        outcome = await closed_loop(FakeSender(None), target, 2, _ignore, now=now)
        return now() - began, outcome

    took, outcome = run(timed)
    point = merge("concurrency", 2, [outcome])  # type: ignore[list-item]
    # the window, then the drain's bound (the timeout plus grace), then the cancellation's
    assert took <= target.duration_s + min(load.DRAIN_S, target.timeout_s) + 0.5 + 1.0 + 1e-6
    assert took >= target.duration_s
    assert point.requests == 0 and point.latency_ms is None


def test_open_loop_counts_requests_cut_off_at_the_end(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(load, "DRAIN_S", 0.2)
    target = _target(warmup_s=0.0, duration_s=0.5)
    seed = 5

    async def timed() -> tuple[float, object]:
        began = now()
        outcome = await open_loop(FakeSender(1.5), target, 50.0, seed, _ignore, now=now)
        return now() - began, outcome

    took, outcome = run(timed)
    point = merge("rate", 50.0, [outcome])  # type: ignore[list-item]
    arrivals = list(itertools.takewhile(lambda t: t < 0.5, poisson_arrivals(50.0, seed)))
    assert point.requests == len(arrivals) > 0
    assert point.errors == point.requests and set(point.error_kinds) == {"unfinished"}
    # the last arrival ends the window; then the drain's bound; then cancelled at once
    assert took == pytest.approx(arrivals[-1] + 0.2 + 0.5)
    assert took < 4
