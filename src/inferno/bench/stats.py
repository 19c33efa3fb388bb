"""Results of a bench run: one ``LoadPoint`` per load level, gathered in a ``BenchReport``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

Mode = Literal["concurrency", "rate"]
PERCENTILES = (50, 90, 95, 99)
SATURATED = 0.9
"""A client process busy this share of the time may have limited what it measured."""


def label(mode: Mode, level: float) -> str:
    """``concurrency 64`` or ``rate 50/s``."""
    return f"concurrency {int(level)}" if mode == "concurrency" else f"rate {level:g}/s"


@dataclass(frozen=True)
class Latency:
    """Latency of the successful requests of one point, in milliseconds."""

    p50: float
    p90: float
    p95: float
    p99: float
    mean: float
    max: float

    @classmethod
    def of(cls, seconds: Sequence[float] | np.ndarray) -> Latency | None:
        """Summarize latencies given in seconds; None when there are none."""
        values = np.asarray(seconds, dtype=np.float64) * 1000.0
        if values.size == 0:
            return None
        p50, p90, p95, p99 = (float(v) for v in np.percentile(values, PERCENTILES))
        return cls(p50, p90, p95, p99, float(values.mean()), float(values.max()))


@dataclass(frozen=True)
class LoadPoint:
    """What the server did under one load level."""

    mode: Mode
    """``concurrency``: closed loop, ``level`` requests outstanding; ``rate``: open loop,
    Poisson arrivals at ``level`` requests/s."""
    level: float
    requests: int
    """Requests recorded (successes and errors) in the measured window."""
    errors: int
    duration_s: float
    """Length of the measured window."""
    latency_ms: Latency | None
    """Of successful requests only; None when none succeeded."""
    offered_rps: float | None = None
    """Open loop: arrivals actually sent per second. Well under ``level`` means the generator
    could not keep up, not that the server is slow."""
    error_kinds: dict[str, int] = field(default_factory=dict)
    """Errors counted by kind: ``HTTP 503``, ``timeout``, ``ClientConnectorError``, ..."""
    error_examples: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Up to three messages per kind."""
    clients: int = 1
    """Load-generator processes that shared the point."""
    client_cpu: float | None = None
    """CPU seconds per second used by the event-loop thread of the busiest of them. Near 1:
    the generator, not the server, may have set the pace."""

    @property
    def successes(self) -> int:
        return self.requests - self.errors

    @property
    def throughput_rps(self) -> float:
        """Successful requests per second of the measured window."""
        return self.successes / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def client_saturated(self) -> bool:
        return self.client_cpu is not None and self.client_cpu >= SATURATED

    @property
    def label(self) -> str:
        return label(self.mode, self.level)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["level"] = int(self.level) if self.mode == "concurrency" else self.level
        data["throughput_rps"] = self.throughput_rps
        data["error_examples"] = {k: list(v) for k, v in self.error_examples.items()}
        return data


@dataclass(frozen=True)
class BenchReport:
    """A whole ``inferno bench`` run."""

    url: str
    model: str
    version: str | None
    inputs: str
    """What each request carried: input names, datatypes, shapes and where values came from."""
    batch: int
    warmup_s: float
    points: tuple[LoadPoint, ...]
    protocol: Literal["http", "grpc"] = "http"
    binary: bool = False
    """HTTP: tensors in Triton's binary extension rather than JSON."""

    @property
    def transport(self) -> str:
        """``HTTP JSON``, ``HTTP binary`` or ``gRPC``."""
        if self.protocol == "grpc":
            return "gRPC"
        return "HTTP binary" if self.binary else "HTTP JSON"

    @property
    def errors(self) -> int:
        return sum(p.errors for p in self.points)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["points"] = [p.to_dict() for p in self.points]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)
