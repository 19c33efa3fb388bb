"""``run_bench``: read the model's metadata, encode the requests, run every point in turn."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from inferno.bench.config import BenchConfig
from inferno.bench.fanout import ClientPool, available_cpus, clients_for
from inferno.bench.inputs import RequestPool, build_pool
from inferno.bench.load import Progress, Target, Tick, merge, run_point
from inferno.bench.metadata import fetch_inputs
from inferno.bench.stats import BenchReport, LoadPoint, Mode, label
from inferno.protocol.address import Address
from inferno.protocol.aio import build_request
from inferno.protocol.codec import request_headers
from inferno.protocol.metadata import model_path

log = logging.getLogger(__name__)
Progressed = Callable[[str, float], None]
JUDGE_S = 1.0
"""A point measured for less than this is too short to tell a saturated generator: not re-run."""
T = TypeVar("T")


def run_bench(config: BenchConfig, progress: Progressed | None = None) -> BenchReport:
    """Load the server at each level of ``config`` and measure it.

    Runs on its own event loop (uvloop when installed); call it from synchronous code. With
    more than one client process (``config.clients``, or the default for a level), those
    processes are started once and stopped before this returns. Without ``config.clients``, a
    point where a client process was busy nearly all the time (so it may have been the limit)
    is run again with twice the processes, up to one per core this process may use.

    Args:
        config: the server, protocol, model, load levels and limits.
        progress: called a few times a second with a status line and the fraction of the
            whole run done (0..1).

    Returns:
        A BenchReport with one LoadPoint per level, closed-loop levels first.

    Raises:
        UserInputError: the server cannot be reached, or ``--data``/``--text`` do not fit.
        UnknownModelError: the server does not serve the model (HTTP 404, gRPC NOT_FOUND).
        MissingExtraError: ``--protocol grpc`` without the [grpc] extra.
    """
    return _run_loop(_bench(config, progress or (lambda _what, _fraction: None)))


def _run_loop(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # Windows, or a minimal install: the default loop is fine, only slower
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def _auth(config: BenchConfig) -> dict[str, str]:
    return {"Authorization": f"Bearer {config.token}"} if config.token else {}


def http_requests(config: BenchConfig, pool: RequestPool) -> tuple[bytes, ...]:
    """Whole infer requests (head and body) for HTTP, JSON or binary extension."""
    address = Address.of(config.url)
    path = model_path(config.model, config.version, "/infer")
    if not config.binary:
        headers = {**request_headers(False, 0), **_auth(config)}
        return tuple(build_request(address, "POST", path, headers, body) for body in pool.bodies)
    return tuple(
        build_request(address, "POST", path, {**request_headers(True, length), **_auth(config)}, body)
        for body, length in pool.binary_bodies()
    )


async def _target(config: BenchConfig, progress: Progressed) -> tuple[Target, RequestPool]:
    progress("reading the model's metadata", 0.0)
    metadata_timeout = min(config.timeout_s, 10.0)
    limits: dict[str, Any] = {
        "warmup_s": config.warmup_s,
        "duration_s": config.duration_s,
        "max_requests": config.max_requests,
        "timeout_s": config.timeout_s,
    }
    if config.protocol == "grpc":
        from inferno.bench import grpc_client

        grpc_client.require_grpc()
        specs = await grpc_client.fetch_inputs(
            config.grpc_address, config.model, config.version, config.token, metadata_timeout
        )
        pool = _pool(config, specs)
        requests = grpc_client.infer_requests(config.model, config.version, specs, pool.samples)
        target = Target("grpc", config.grpc_address, requests, token=config.token, **limits)
    else:
        specs = await fetch_inputs(
            config.url, config.model, config.version, _auth(config), metadata_timeout
        )
        pool = _pool(config, specs)
        target = Target("http", Address.of(config.url), http_requests(config, pool), **limits)
    log.debug("bench %s: %d requests, %s", config.model, len(target.requests), pool.description)
    return target, pool


def _pool(config: BenchConfig, specs: Any) -> RequestPool:
    return build_pool(
        specs, batch=config.batch, data=config.data, text=config.text, seed=config.seed
    )


class _Points:
    """Runs the points of one bench, in this process or in client processes."""

    def __init__(self, config: BenchConfig, target: Target) -> None:
        self.config = config
        self.target = target
        self.clients: ClientPool | None = None

    async def measure(self, index: int, mode: Mode, level: float, tick: Tick) -> LoadPoint:
        """One point; again with twice the processes while one was saturated (default only)."""
        config = self.config
        count = clients_for(mode, level, config.clients)
        most = count if config.clients is not None else clients_for(mode, level, available_cpus())
        seed = config.seed + index
        while True:
            if count > 1:
                self.clients = self.clients or ClientPool(self.target)
                point = await self.clients.run(mode, level, count, seed, tick)
            else:
                point = merge(mode, level, [await run_point(self.target, mode, level, seed, tick)])
            if not point.client_saturated or count >= most or point.duration_s < JUDGE_S:
                return point
            # The generator, not the server, may have set the pace: again with more processes.
            log.info("%s: a client process was busy %.0f%% of the time; again with %d",
                     label(mode, level), 100 * (point.client_cpu or 0), min(2 * count, most))  # fmt: skip
            count = min(2 * count, most)

    def close(self) -> None:
        if self.clients is not None:
            self.clients.close()


async def _bench(config: BenchConfig, progress: Progressed) -> BenchReport:
    target, pool = await _target(config, progress)
    levels = config.levels()
    runner = _Points(config, target)
    points: list[LoadPoint] = []
    try:
        for index, (mode, level) in enumerate(levels):

            def tick(state: Progress, index: int = index, name: str = label(mode, level)) -> None:
                progress(state.line(name), (index + min(state.fraction, 1.0)) / len(levels))

            points.append(await runner.measure(index, mode, level, tick))
    finally:
        runner.close()
    progress("done", 1.0)
    return BenchReport(
        url=config.server,
        model=config.model,
        version=config.version,
        inputs=pool.description,
        batch=config.batch,
        warmup_s=config.warmup_s,
        points=tuple(points),
        protocol=config.protocol,
        binary=config.binary,
    )
