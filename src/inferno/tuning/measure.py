"""Measure one variant on one runtime: latency, throughput, size, peak memory, outputs.

Timing: warm up first, then repeat and take medians. Latency is batch 1 over real samples
(one at a time, each at its own length); throughput runs real batches of the serving size,
each padded only to its longest sample.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import psutil

from inferno.models.model import EvalData, Model
from inferno.runtimes.base import Feeds, Runtime


@dataclass(frozen=True)
class Timing:
    latency_ms_p50: float
    latency_ms_p99: float
    throughput_per_s: float
    peak_memory_mb: float
    joules_per_inference: float | None = None
    energy_source: str | None = None


class PeakMemory:
    """Samples this process's RSS in a thread; ``peak_mb`` is the rise above the start."""

    def __init__(self, interval_s: float = 0.005) -> None:
        self._proc = psutil.Process()
        self._interval = interval_s
        self._stop = threading.Event()
        self._base = self._peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self._peak = max(self._peak, self._proc.memory_info().rss)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._proc.memory_info().rss)

    @property
    def peak_mb(self) -> float:
        return (self._peak - self._base) / 2**20


def encode_batches(model: Model, data: EvalData, batch_size: int) -> list[Feeds]:
    return [model.preprocessor.encode(batch) for batch in data.batches(batch_size)]


def run_outputs(runtime: Runtime, batches: Sequence[Feeds], output_index: int) -> np.ndarray:
    """Run every batch and stack the chosen output (the accuracy pass)."""
    return np.concatenate([runtime.run(feeds)[output_index] for feeds in batches])


def latencies_ms(runtime: Runtime, singles: Sequence[Feeds], repeats: int) -> list[float]:
    """Batch-1 call times in ms, cycling over the single samples."""
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        runtime.run(singles[i % len(singles)])
        times.append((time.perf_counter() - start) * 1e3)
    return times


def batches_per_s(runtime: Runtime, batches: Sequence[Feeds]) -> float:
    """Samples per second over one pass of the batches."""
    samples = sum(len(next(iter(f.values()))) for f in batches)
    start = time.perf_counter()
    for feeds in batches:
        runtime.run(feeds)
    return samples / (time.perf_counter() - start)


def time_runtime(runtime: Runtime, singles: Sequence[Feeds], batches: Sequence[Feeds],
                 repeats: int, warmup: int) -> tuple[float, float, float]:
    """(p50 ms, p99 ms) at batch 1 and samples/s at the serving batch size (median of passes)."""
    for feeds in list(singles[:warmup]) + list(batches[:warmup]):
        runtime.run(feeds)
    latencies = latencies_ms(runtime, singles, repeats)
    rounds = max(3, repeats // max(1, len(batches)))
    rates = [batches_per_s(runtime, batches) for _ in range(rounds)]
    return float(np.percentile(latencies, 50)), float(np.percentile(latencies, 99)), float(np.median(rates))


def energy_per_inference(runtime: Runtime, batches: Sequence[Feeds], device: str,
                         min_seconds: float | None = None) -> tuple[float | None, str | None]:
    """Joules per sample at the serving batch size, and where the figure came from.

    Runs the batches round and round for at least ``min_seconds`` (power readings are
    averaged over about a second, energy counters tick coarsely), inside an ``EnergyMeter``
    for the device. (None, None) at once when the device reports no energy here.
    """
    from inferno.power import MIN_ENERGY_WINDOW_S, EnergyMeter

    if not EnergyMeter.available(device):
        return None, None
    window = MIN_ENERGY_WINDOW_S if min_seconds is None else min_seconds
    samples = 0
    with EnergyMeter(device) as meter:
        start = time.perf_counter()
        while time.perf_counter() - start < window:
            for feeds in batches:
                runtime.run(feeds)
                samples += len(next(iter(feeds.values())))
    if meter.joules is None or samples == 0:
        return None, None
    return meter.joules / samples, meter.source
