"""The interface of one served version, as the routes and the gRPC service use it.

Two kinds implement it: a version of a repository model (``serving.manager.ServedVersion``:
a plan, its instances, batcher and cache) and a model that the process starting the server
builds and attaches to the manager (``serving.cascade.CascadeVersion``). The manager holds
both alike; only repository models are loaded, reloaded and unloaded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from inferno.errors import UserInputError
from inferno.monitoring.monitor import Monitor
from inferno.repository.plan import PlanRunner
from inferno.serving.config import ModelServeConfig
from inferno.serving.pipelines import Answer
from inferno.serving.protocol import InferRequest
from inferno.serving.stats import VersionStats


class Served(Protocol):
    """What the routes and the gRPC service use of one served version: a repository version
    (:class:`ServedVersion`), or a model its caller made and attached (``serving.cascade``)."""

    ready: bool
    """False once the manager retires it."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def config(self) -> ModelServeConfig: ...

    @property
    def stats(self) -> VersionStats:
        """Triton's statistics and the Prometheus series of the version."""
        ...

    @property
    def monitor(self) -> Monitor | None:
        """Drift and validation, when the version has a reference profile."""
        ...

    @property
    def queue_full(self) -> bool: ...

    @property
    def queue_full_message(self) -> str: ...

    def admit(self, started: float) -> None:
        """Refuse a request before its body is read (503 when the queue is full)."""

    async def infer(self, request: InferRequest, started: float) -> Answer:
        """Check and run one request, counting its failures; raise InfernoError for the caller to map."""
        ...

    def check_response_size(self, size: int, started: float) -> None:
        """Refuse (400) a response over the server's budget rather than send it."""

    def metadata(self, versions: list[str]) -> dict[str, Any]: ...

    def model_config(self) -> dict[str, Any]: ...

    async def close(self) -> None:
        """Finish every accepted request, then free what the version holds."""


def refuse_large_response(stats: VersionStats, limit: int | None, size: int, started: float) -> None:
    """Count and refuse (400) a response of ``size`` bytes over ``limit`` (None: no limit)."""
    if limit is not None and size > limit:
        stats.request_failed(time.perf_counter() - started, "rejected")
        raise UserInputError(
            f"response: expected at most {limit} bytes (the server's max_response_bytes), this one "
            f"is {size}; ask for fewer rows or outputs, or binary_data outputs")


RunnerFactory = Callable[[str, int, Path, ModelServeConfig, bool], list[PlanRunner]]
"""``(name, version, folder, config, trust) -> runners``: one runner per batch worker of a
version. The default loads ``config.instances`` runtimes here; ``inferno.distributed`` runs
the model on Ray replicas and hands back runners whose runtime calls them."""


def local_runners(name: str, version: int, folder: Path, config: ModelServeConfig, trust: bool) -> list[PlanRunner]:
    """``config.instances`` runners of the plan in ``folder``, each with its own session."""
    runners: list[PlanRunner] = []
    try:
        for _ in range(config.instances):
            runners.append(PlanRunner(folder, config.threads, trust=trust))
    except BaseException:
        for r in runners:
            r.close()
        raise
    return runners
