"""Prometheus metrics of a server, named after Triton's and labelled by model and version.

Each server owns its own registry (tests run several servers in one process). Children are
bound once per model version so the hot path only increments. The request metrics
(``inferno_request_success_total``, ``inferno_request_failure_total``,
``inferno_request_duration_seconds``) also carry ``protocol``: ``http`` or ``grpc``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from inferno.hardware.power import gpu_readings
from inferno.monitoring.gpu_metrics import GpuCollector

if TYPE_CHECKING:
    from inferno.monitoring.drift import Verdict

CONTENT_TYPE = CONTENT_TYPE_LATEST

PROTOCOLS = ("http", "grpc")
"""The values of the request metrics' ``protocol`` label."""

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


_Child = TypeVar("_Child", Counter, Histogram)


@dataclass(frozen=True)
class VersionMetrics:
    """The metric children of one model version."""

    success: Callable[[str], Counter]
    """By protocol."""
    failure: Callable[[str, str], Counter]
    """By protocol and reason."""
    inference_count: Counter
    exec_count: Counter
    queue_us: Counter
    compute_us: Counter
    request_seconds: Callable[[str], Histogram]
    """By protocol."""
    batch_size: Histogram
    cache_hits: Counter
    cache_misses: Counter


class ServingMetrics:
    """All metrics of one server."""

    def __init__(self, protocols: Sequence[str] = ("http",)) -> None:
        """``protocols``: those served, whose request series exist from a version's load on
        (at 0); another protocol's appear with its first request."""
        disable_created_metrics()  # the *_created series only double the scrape
        self.registry = CollectorRegistry(auto_describe=True)
        self.protocols = tuple(protocols)
        labels = ("model", "version")
        r = self.registry
        self._success = Counter("inferno_request_success", "Requests answered successfully, by protocol.",
                                (*labels, "protocol"), registry=r)
        self._failure = Counter("inferno_request_failure", "Requests that failed, by protocol and reason.",
                                (*labels, "protocol", "reason"), registry=r)
        self._inferences = Counter("inferno_inference_count", "Rows inferred (a request may carry several).",
                                   labels, registry=r)
        self._executions = Counter("inferno_inference_exec_count",
                                   "Runtime calls; inference_count / exec_count is the average batch size.",
                                   labels, registry=r)
        self._queue = Counter("inferno_inference_queue_duration_us", "Time requests waited in the queue.",
                              labels, registry=r)
        self._compute = Counter("inferno_inference_compute_duration_us",
                                "Time spent computing batches (tokenize, run, post-process).", labels, registry=r)
        self._latency = Histogram("inferno_request_duration_seconds",
                                  "Request latency, from body read to answer, by protocol.",
                                  (*labels, "protocol"), buckets=_LATENCY_BUCKETS, registry=r)
        self._batch = Histogram("inferno_batch_size", "Rows per runtime call.", labels,
                                buckets=_BATCH_BUCKETS, registry=r)
        self._hits = Counter("inferno_cache_hit_count", "Response cache hits.", labels, registry=r)
        self._misses = Counter("inferno_cache_miss_count", "Response cache misses.", labels, registry=r)
        self._depth = Gauge("inferno_queue_depth", "Requests waiting in the batch queue.", labels, registry=r)
        self._info = Gauge("inferno_model_info", "The runtime, provider and precision a loaded version runs on.",
                           (*labels, "runtime", "provider", "precision"), registry=r)
        self._info_labels: dict[tuple[str, str], tuple[str, ...]] = {}
        self._drift_score = Gauge("inferno_drift_score",
                                  "A feature's drift score at the last check (higher: more drift).",
                                  (*labels, "feature"), registry=r)
        self._drift_threshold = Gauge("inferno_drift_threshold",
                                      "The score above which a feature counts as drifted.",
                                      (*labels, "feature"), registry=r)
        self._drift_detected = Gauge("inferno_drift_detected", "1 while the drift verdict is on.",
                                     labels, registry=r)
        self._validation = Counter("inferno_validation_failures",
                                   "Requests whose input failed a validation rule.",
                                   (*labels, "input", "reason"), registry=r)
        self._drift_features: dict[tuple[str, str], set[str]] = {}
        if gpu_readings():  # a machine without a GPU pays nothing per scrape
            r.register(GpuCollector(gpu_readings))

    def bind(self, model: str, version: str, *, runtime: str, provider: str, precision: str,
             queue_depth: Callable[[], float]) -> VersionMetrics:
        """Create the children of a newly loaded version."""
        self._depth.labels(model, version).set_function(queue_depth)
        info = (model, version, runtime, provider, precision)
        self._info.labels(*info).set(1)
        self._info_labels[(model, version)] = info
        success, latency = _children(self._success, model, version), _children(self._latency, model, version)
        failure = _children(self._failure, model, version)
        for protocol in self.protocols:  # the series a dashboard reads exist before the first request
            success(protocol)
            latency(protocol)
        return VersionMetrics(
            success, failure,
            self._inferences.labels(model, version), self._executions.labels(model, version),
            self._queue.labels(model, version), self._compute.labels(model, version),
            latency, self._batch.labels(model, version),
            self._hits.labels(model, version), self._misses.labels(model, version),
        )

    def monitor_sink(self, model: str, version: str) -> DriftMetrics:
        """Where a version's monitor reports drift and validation failures."""
        self._drift_detected.labels(model, version).set(0)
        return DriftMetrics(self, model, version)

    def forget(self, model: str, version: str) -> None:
        """Drop the gauges of an unloaded version (counters stay: they only grow)."""
        self._depth.remove(model, version)
        for feature in self._drift_features.pop((model, version), set()):
            self._drift_score.remove(model, version, feature)
            self._drift_threshold.remove(model, version, feature)
        with contextlib.suppress(KeyError):
            self._drift_detected.remove(model, version)
        info = self._info_labels.pop((model, version), None)
        if info is not None:
            self._info.remove(*info)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _children(metric: _Child, *labels: str) -> Callable[..., _Child]:
    """``metric``'s child for ``labels`` and the rest, each looked up once and then kept: a
    request (and a refusal under overload) should not pay prometheus_client's labels() lookup."""
    kept: dict[tuple[str, ...], _Child] = {}

    def child(*rest: str) -> _Child:
        found = kept.get(rest)
        if found is None:
            found = kept[rest] = metric.labels(*labels, *rest)
        return found

    return child


class DriftMetrics:
    """A version's drift gauges and validation counter (the monitor's sink)."""

    def __init__(self, metrics: ServingMetrics, model: str, version: str) -> None:
        self._m, self._labels = metrics, (model, version)

    def drift(self, verdict: Verdict) -> None:
        m = self._m
        m._drift_detected.labels(*self._labels).set(int(verdict.drifted))
        seen = m._drift_features.setdefault(self._labels, set())
        for score in verdict.features:
            if score.score is None or score.threshold is None:
                continue
            seen.add(score.name)
            m._drift_score.labels(*self._labels, score.name).set(score.score)
            m._drift_threshold.labels(*self._labels, score.name).set(score.threshold)

    def validation_failure(self, input_name: str, reason: str) -> None:
        self._m._validation.labels(*self._labels, input_name, reason).inc()
