"""``run_bench``: read the model's metadata, encode the bodies, run every point in turn."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import aiohttp

from inferno.bench.config import MAX_IN_FLIGHT, BenchConfig
from inferno.bench.inputs import build_pool
from inferno.bench.load import Target, closed_loop, new_session, open_loop
from inferno.bench.metadata import fetch_inputs, metadata_path
from inferno.bench.stats import BenchReport, LoadPoint

log = logging.getLogger(__name__)
Progress = Callable[[str, float], None]
T = TypeVar("T")


def run_bench(config: BenchConfig, progress: Progress | None = None) -> BenchReport:
    """Load the server at each level of ``config`` and measure it.

    Runs on its own event loop (uvloop when installed); call it from synchronous code.

    Args:
        config: the server, model, load levels and limits.
        progress: called a few times a second with a status line and the fraction of the
            whole run done (0..1).

    Returns:
        A BenchReport with one LoadPoint per level, closed-loop levels first.

    Raises:
        UserInputError: the server cannot be reached, or ``--data``/``--text`` do not fit.
        UnknownModelError: the server does not serve the model (HTTP 404 on its metadata).
    """
    return _run_loop(_bench(config, progress or (lambda _what, _fraction: None)))


def _run_loop(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # Windows, or a minimal install: the default loop is fine, only slower
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


async def _bench(config: BenchConfig, progress: Progress) -> BenchReport:
    headers = {"Content-Type": "application/json"}
    if config.token:
        headers["Authorization"] = f"Bearer {config.token}"
    progress("reading the model's metadata", 0.0)
    timeout = aiohttp.ClientTimeout(total=min(config.timeout_s, 10.0))
    async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
        specs = await fetch_inputs(session, config.url, config.model, config.version)
    pool = build_pool(
        specs, batch=config.batch, data=config.data, text=config.text, seed=config.seed
    )
    log.debug("bench %s: %d bodies, %s", config.model, len(pool.bodies), pool.description)
    target = Target(
        url=config.url + metadata_path(config.model, config.version) + "/infer",
        headers=headers,
        bodies=pool.bodies,
        warmup_s=config.warmup_s,
        duration_s=config.duration_s,
        max_requests=config.max_requests,
        timeout_s=config.timeout_s,
    )
    levels = config.levels()
    points: list[LoadPoint] = []
    for index, (mode, level) in enumerate(levels):

        def tick(what: str, fraction: float, index: int = index) -> None:
            progress(what, (index + min(fraction, 1.0)) / len(levels))

        if mode == "concurrency":
            async with new_session(target, int(level)) as session:
                point = await closed_loop(session, target, int(level), tick)
        else:
            async with new_session(target, MAX_IN_FLIGHT) as session:
                point = await open_loop(session, target, level, config.seed + index, tick)
        points.append(point)
    progress("done", 1.0)
    return BenchReport(
        url=config.url,
        model=config.model,
        version=config.version,
        inputs=pool.description,
        batch=config.batch,
        warmup_s=config.warmup_s,
        points=tuple(points),
    )
