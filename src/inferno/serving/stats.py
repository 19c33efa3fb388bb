"""Per-version accounting, kept once and shown twice: Triton's statistics JSON and Prometheus."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from inferno.monitoring.metrics import VersionMetrics
from inferno.serving.batcher import BatchRecord
from inferno.serving.pipelines import StageTimes


@dataclass
class _Duration:
    count: int = 0
    ns: int = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += int(seconds * 1e9)

    def to_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


class VersionStats:
    """Counters of one served version; also the batcher's observer."""

    def __init__(self, metrics: VersionMetrics, stages: Sequence[StageTimes]) -> None:
        self.metrics = metrics
        self._stages = stages
        self.success = _Duration()
        self.fail = _Duration()
        self.queue = _Duration()
        self.compute = _Duration()
        self.cache_hit = _Duration()
        self.cache_miss = _Duration()
        self.inference_count = 0
        self.execution_count = 0
        self.last_inference_ms = 0
        self.batch_sizes: dict[int, _Duration] = {}

    def on_batch(self, record: BatchRecord) -> None:
        self.inference_count += record.rows
        self.execution_count += 1
        self.last_inference_ms = int(time.time() * 1000)
        queued = sum(record.queue_s)
        self.queue.add(queued, record.requests)
        self.compute.add(record.compute_s, record.requests)
        self.batch_sizes.setdefault(record.rows, _Duration()).add(record.compute_s)
        m = self.metrics
        m.inference_count.inc(record.rows)
        m.exec_count.inc()
        m.queue_us.inc(queued * 1e6)
        m.compute_us.inc(record.compute_s * 1e6)
        m.batch_size.observe(record.rows)

    def request_done(self, seconds: float) -> None:
        self.success.add(seconds)
        self.metrics.success.inc()
        self.metrics.request_seconds.observe(seconds)

    def request_failed(self, seconds: float, reason: str) -> None:
        self.fail.add(seconds)
        self.metrics.failure(reason).inc()

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
        split = {
            "compute_input": sum(s.input_s for s in self._stages),
            "compute_infer": sum(s.infer_s for s in self._stages),
            "compute_output": sum(s.output_s for s in self._stages),
        }
        executed = self.compute.count  # requests that ran in a batch: not refused, not from the cache
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
                **{k: {"count": executed, "ns": int(v * 1e9)} for k, v in split.items()},
                "cache_hit": self.cache_hit.to_dict(),
                "cache_miss": self.cache_miss.to_dict(),
            },
            "batch_stats": [
                {"batch_size": size, "compute_infer": d.to_dict()}
                for size, d in sorted(self.batch_sizes.items())
            ],
        }
