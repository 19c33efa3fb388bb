"""Per-version accounting, kept once and shown twice: Triton's statistics JSON and Prometheus.

Compute time is one accounting, as Triton defines it. Per batch, the pipeline that ran it
measures compute_input / compute_infer / compute_output (its ``StageTimes``, read as the
change since that instance's previous batch). ``batch_stats[size]`` adds each duration once
per execution of that size; ``inference_stats`` adds the same durations once per request of
the batch. So ``inference_stats.X.ns`` is Σ over batches of (requests × the batch's X), and
with one request per batch it equals Σ ``batch_stats[*].X.ns`` exactly (each duration is
rounded to nanoseconds once, then only integers are summed).

Prometheus' ``inferno_inference_compute_duration_us`` is each batch's whole execute time, once
per batch, as the batcher clocked it (what the pipelines measure plus the hand-off to the
worker thread and the monitor's look at the batch).

Requests are counted once whichever protocol brought them (Triton's statistics add HTTP's and
gRPC's); the Prometheus request metrics also say which one, from :data:`PROTOCOL`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from inferno.monitoring.metrics import VersionMetrics
from inferno.serving.batcher import BatchRecord
from inferno.serving.pipelines import StageTimes

PROTOCOL: ContextVar[str] = ContextVar("inferno_protocol", default="http")
"""The protocol of the request being handled: the gRPC service sets it to ``grpc`` in each
RPC's own task, HTTP is the default. A context variable rather than an argument because
requests are counted (and refused) deep in the manager and the batcher's caller, which need not
know the transport."""

STAGES = ("compute_input", "compute_infer", "compute_output")
"""Triton's split of compute time, in the order of ``StageTimes``' fields."""


@dataclass
class _Duration:
    count: int = 0
    ns: int = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += int(seconds * 1e9)

    def add_ns(self, ns: int, count: int = 1) -> None:
        """``count`` occurrences of a duration of ``ns`` each."""
        self.count += count
        self.ns += ns * count

    def to_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


def _seconds(times: StageTimes) -> tuple[float, float, float]:
    return times.input_s, times.infer_s, times.output_s


class VersionStats:
    """Counters of one served version; also the batcher's observer."""

    def __init__(self, metrics: VersionMetrics, stages: Sequence[StageTimes]) -> None:
        """``stages``: each instance's ``StageTimes``, in the order of the batcher's executes."""
        self.metrics = metrics
        self._stages = stages
        self._seen = [_seconds(t) for t in stages]
        """Each instance's times as of its last batch (the warm-up's, if any, are not traffic)."""
        self.success = _Duration()
        self.fail = _Duration()
        self.queue = _Duration()
        self.cache_hit = _Duration()
        self.cache_miss = _Duration()
        self.compute = {stage: _Duration() for stage in STAGES}
        """Per request executed in a batch (not refused, not from the cache)."""
        self.inference_count = 0
        self.execution_count = 0
        self.last_inference_ms = 0
        self.batch_sizes: dict[int, dict[str, _Duration]] = {}
        """Per execution, by rows in the batch."""

    def on_batch(self, record: BatchRecord) -> None:
        self.inference_count += record.rows
        self.execution_count += 1
        self.last_inference_ms = int(time.time() * 1000)
        queued = sum(record.queue_s)
        self.queue.add(queued, record.requests)
        by_size = self.batch_sizes.setdefault(record.rows, {stage: _Duration() for stage in STAGES})
        for stage, ns in zip(STAGES, self._split_ns(record.instance), strict=True):
            self.compute[stage].add_ns(ns, record.requests)
            by_size[stage].add_ns(ns)
        m = self.metrics
        m.inference_count.inc(record.rows)
        m.exec_count.inc()
        m.queue_us.inc(queued * 1e6)
        m.compute_us.inc(record.compute_s * 1e6)
        m.batch_size.observe(record.rows)

    def _split_ns(self, instance: int) -> tuple[int, int, int]:
        """What ``instance``'s pipeline measured for its latest batch, in ns per stage.

        The batcher reports a batch before that instance runs the next one, and an instance
        runs one batch at a time: the change since its previous report is this batch's alone
        (a failed batch's too, so it is never charged to the next one).
        """
        if not 0 <= instance < len(self._stages):
            return 0, 0, 0
        now = _seconds(self._stages[instance])
        before, self._seen[instance] = self._seen[instance], now
        a, b, c = (max(0, round((n - p) * 1e9)) for n, p in zip(now, before, strict=True))
        return a, b, c

    def request_done(self, seconds: float) -> None:
        """A request answered after ``seconds`` (on the protocol :data:`PROTOCOL` names)."""
        self.success.add(seconds)
        protocol = PROTOCOL.get()
        self.metrics.success(protocol).inc()
        self.metrics.request_seconds(protocol).observe(seconds)

    def request_failed(self, seconds: float, reason: str) -> None:
        """A request refused or failed after ``seconds``; ``reason``: rejected, timeout,
        cancelled or backend."""
        self.fail.add(seconds)
        self.metrics.failure(PROTOCOL.get(), reason).inc()

    def cache_lookup(self, hit: bool, seconds: float, rows: int) -> None:
        if hit:
            self.cache_hit.add(seconds)
            self.metrics.cache_hits.inc()
            self.inference_count += rows  # Triton counts cached inferences, not executions
        else:
            self.cache_miss.add(seconds)
            self.metrics.cache_misses.inc()

    def to_triton(self, name: str, version: str) -> dict[str, Any]:
        """One entry of Triton's ``model_stats``; compute time split as the pipelines measured it."""
        return {
            "name": name,
            "version": version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.to_dict(),
                "fail": self.fail.to_dict(),
                "queue": self.queue.to_dict(),
                **{stage: d.to_dict() for stage, d in self.compute.items()},
                "cache_hit": self.cache_hit.to_dict(),
                "cache_miss": self.cache_miss.to_dict(),
            },
            "batch_stats": [
                {"batch_size": size, **{stage: d.to_dict() for stage, d in stages.items()}}
                for size, stages in sorted(self.batch_sizes.items())
            ],
        }
