"""Several load-generator processes sharing each point, so that one process is never the limit.

A Python process spends CPU on every request it sends; past some rate it, not the server,
sets the pace. ``--clients N`` (or the default, :func:`auto_clients`) runs a point in N
processes started once per run (``spawn``: no state copied from this one, safe with gRPC's
threads). Each gets its part of the point: a closed loop's workers are split between them, an
open loop's rate too (N Poisson processes at λ/N add up to one at λ), and so is
``max_requests``. They start at the same instant, measure the same window, and what they
recorded (latencies, errors by kind) merges into one :class:`~inferno.bench.stats.LoadPoint`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from dataclasses import dataclass
from typing import Any

from inferno.bench.config import MAX_CLIENTS
from inferno.bench.load import (
    DRAIN_S,
    TICK_S,
    Outcome,
    Progress,
    Share,
    Target,
    Tick,
    merge,
    run_point,
)
from inferno.bench.stats import LoadPoint, Mode
from inferno.errors import ClientProcessError as ClientProcessError  # re-export

CONNECTIONS_PER_CLIENT = 128
"""Closed loop: workers one process takes before the default starts with another."""
RATE_PER_CLIENT = 5000.0
"""Open loop: requests/s one process takes before the default starts with another. (One
process spends ~25 µs of CPU per HTTP request and ~100 µs per gRPC call, so this leaves it
mostly idle; a point where it was busy anyway is run again with more, see ``run_bench``.)"""
START_S = 60.0
"""A client process has this long to start (import numpy, gRPC, ...)."""
ALIGN_S = 0.2
"""The processes of a point begin this long after the parent sends it (all at one instant)."""


def available_cpus() -> int:
    """Cores this process may run on (its affinity, e.g. under ``taskset``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def auto_clients(mode: Mode, level: float, cpus: int | None = None) -> int:
    """Processes for a point when ``--clients`` is not given: one per ``CONNECTIONS_PER_CLIENT``
    workers or ``RATE_PER_CLIENT`` requests/s, at most one per available core."""
    per = CONNECTIONS_PER_CLIENT if mode == "concurrency" else RATE_PER_CLIENT
    wanted = math.ceil(level / per)
    return max(1, min(wanted, cpus if cpus is not None else available_cpus()))


def clients_for(mode: Mode, level: float, clients: int | None) -> int:
    """Processes that share a point: ``clients`` (or the default), never more than its workers."""
    count = auto_clients(mode, level) if clients is None else clients
    if mode == "concurrency":
        count = min(count, int(level))
    return max(1, count)


def split(total: int, parts: int) -> list[int]:
    """``total`` in ``parts`` nearly equal whole shares, larger first."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


@dataclass(frozen=True)
class _Job:
    mode: Mode
    level: float
    seed: int | list[int]
    offset: int
    max_requests: int | None
    begin_monotonic: float


def _child(conn: Any, target: Target, slot: int, board: Any) -> None:
    """A client process: run the jobs it is sent, one at a time, until told to stop (None)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()

    def tick(progress: Progress) -> None:
        base = slot * 4
        board[base : base + 4] = [
            progress.successes,
            progress.errors,
            progress.fraction,
            progress.recording_s,
        ]

    with runner, contextlib.suppress(EOFError, BrokenPipeError):
        conn.send(("ready", None))
        while True:
            job = conn.recv()
            if job is None:
                break
            begin = time.perf_counter() + (job.begin_monotonic - time.monotonic())
            share = Share(offset=job.offset, max_requests=job.max_requests, begin=begin)
            try:
                outcome = runner.run(run_point(target, job.mode, job.level, job.seed, tick, share))
            except Exception as exc:  # reported to the parent, which raises it there
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
                continue
            conn.send(("ok", outcome))


class ClientPool:
    """Client processes for one run, started as points need them, stopped by :meth:`close`."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.context = multiprocessing.get_context("spawn")
        self.board: Any = None
        """Each process's latest Progress, four doubles per slot, read a few times a second."""
        self.processes: list[Any] = []
        self.pipes: list[Any] = []

    async def _grow(self, count: int) -> None:
        if self.board is None:
            self.board = self.context.Array("d", 4 * MAX_CLIENTS, lock=False)
        first = len(self.processes)
        for slot in range(first, count):
            parent, child = self.context.Pipe()
            process = self.context.Process(
                target=_child,
                args=(child, self.target, slot, self.board),
                name=f"inferno-bench-client-{slot}",
                daemon=True,
            )
            process.start()
            child.close()
            self.processes.append(process)
            self.pipes.append(parent)
        deadline = time.monotonic() + START_S
        for slot in range(first, count):
            await self._receive(slot, deadline, "start")

    async def _receive(self, slot: int, deadline: float, what: str) -> tuple[str, Any]:
        pipe = self.pipes[slot]
        while not pipe.poll():
            if not self.processes[slot].is_alive():
                raise ClientProcessError(
                    f"load-generator process {slot} exited (code "
                    f"{self.processes[slot].exitcode}) before it could {what}"
                )
            if time.monotonic() > deadline:
                raise ClientProcessError(f"load-generator process {slot} did not {what} in time")
            await asyncio.sleep(min(TICK_S, 0.05))
        try:
            message: tuple[str, Any] = pipe.recv()
        except EOFError as exc:
            raise ClientProcessError(f"load-generator process {slot} closed its pipe") from exc
        return message

    async def run(self, mode: Mode, level: float, count: int, seed: int, tick: Tick) -> LoadPoint:
        """One point shared by ``count`` processes (started now if there are fewer)."""
        count = min(count, MAX_CLIENTS)
        if count > len(self.processes):
            await self._grow(count)
        target = self.target
        limits = split(target.max_requests, count) if target.max_requests else [None] * count
        if mode == "concurrency":
            workers = split(int(level), count)
            offsets = [sum(workers[:k]) for k in range(count)]
            levels: list[float] = [float(w) for w in workers]
        else:
            spread = max(1, len(target.requests) // count)
            offsets = [k * spread for k in range(count)]  # each process from another body on
            levels = [level / count] * count
        begin = time.monotonic() + ALIGN_S
        for k in range(count):
            self.board[4 * k : 4 * k + 4] = [0.0, 0.0, 0.0, -1.0]
            self.pipes[k].send(
                _Job(mode, levels[k], [seed, k], offsets[k], limits[k], begin)  # type: ignore[arg-type]
            )
        deadline = begin + target.warmup_s + target.duration_s + DRAIN_S + target.timeout_s + 10
        outcomes: list[Outcome | None] = [None] * count
        while any(o is None for o in outcomes):
            for k in range(count):
                if outcomes[k] is None and self.pipes[k].poll():
                    kind, payload = await self._receive(k, deadline, "finish its point")
                    if kind == "error":
                        raise ClientProcessError(f"load-generator process {k}: {payload}")
                    outcomes[k] = payload
            for k in range(count):
                if outcomes[k] is None and not self.processes[k].is_alive():
                    raise ClientProcessError(
                        f"load-generator process {k} exited (code {self.processes[k].exitcode}) "
                        "during a point"
                    )
            if time.monotonic() > deadline:
                raise ClientProcessError(
                    "load-generator processes did not finish their point in time"
                )
            tick(self._progress(count))
            await asyncio.sleep(TICK_S / 5)
        return merge(mode, level, [o for o in outcomes if o is not None])

    def _progress(self, count: int) -> Progress:
        rows = [self.board[4 * k : 4 * k + 4] for k in range(count)]
        return Progress(
            successes=int(sum(r[0] for r in rows)),
            errors=int(sum(r[1] for r in rows)),
            fraction=min(r[2] for r in rows),
            recording_s=max(r[3] for r in rows),
        )

    def close(self) -> None:
        """Stop the processes (a bounded wait, then terminate)."""
        for pipe in self.pipes:
            with contextlib.suppress(OSError):  # BrokenPipeError: that process is gone already
                pipe.send(None)
        for process in self.processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
        for pipe in self.pipes:
            pipe.close()
        self.processes.clear()
        self.pipes.clear()
