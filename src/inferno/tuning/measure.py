"""Measure one variant on one runtime: latency, throughput, size, peak memory, outputs.

Timing: warm up first, then repeat and take medians. Latency is batch 1 over real samples
(one at a time, each at its own length); throughput runs real batches of the serving size,
each padded only to its longest sample. Rows are counted by the model's ``Signature.rows``
(its batch axis need not be axis 0 of its first input). ``MachineLoad`` says whether other
work competed for the CPUs while the figures were taken.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import psutil

from inferno.models.model import EvalData, Model
from inferno.runtimes.base import Feeds, Runtime

Rows = Callable[[Feeds], int]
"""How many rows (samples) a call's feeds hold: ``Signature.rows``."""


@dataclass
class EvalInputs:
    """The evaluation data encoded once, shared by every measurement."""

    batches: list[Feeds]
    timing_batches: list[Feeds]
    singles: list[Feeds]
    labels: np.ndarray | None
    output_index: int
    rows: Rows
    """Rows in a call's feeds (``Signature.rows``: the batch axis need not be axis 0)."""
    output_axis: int | None = 0
    """The judged output's batch axis; None: each call's output is one row."""


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


def run_outputs(runtime: Runtime, batches: Sequence[Feeds], output_index: int,
                batch_axis: int | None = 0) -> np.ndarray:
    """Run every batch and stack the chosen output, rows first (the accuracy pass).

    ``batch_axis``: where the output has its rows (moved to axis 0 before stacking); None:
    the graph has no batch, and each call's whole output is one row.
    """
    outputs = [runtime.run(feeds)[output_index] for feeds in batches]
    if batch_axis is None:
        return np.stack(outputs)
    return np.concatenate([np.moveaxis(o, batch_axis, 0) for o in outputs])


def latencies_ms(runtime: Runtime, singles: Sequence[Feeds], repeats: int) -> list[float]:
    """Batch-1 call times in ms, cycling over the single samples."""
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        runtime.run(singles[i % len(singles)])
        times.append((time.perf_counter() - start) * 1e3)
    return times


def batches_per_s(runtime: Runtime, batches: Sequence[Feeds], rows: Rows) -> float:
    """Samples per second over one pass of the batches."""
    samples = sum(rows(f) for f in batches)
    start = time.perf_counter()
    for feeds in batches:
        runtime.run(feeds)
    return samples / (time.perf_counter() - start)


def timed_unit(runtime: Runtime, feeds: Sequence[Feeds], rows: Rows,
               min_seconds: float) -> Callable[[], list[tuple[float, float]]]:
    """A turn of work for interleaved timing: one untimed call (to wake the runtime's
    threads), then whole passes over ``feeds`` until ``min_seconds`` of timed calls (at least
    one pass); returns (seconds, rows) for each timed call.

    Whole passes, so that every contender of a round times the same work: the timing batches
    run from the shortest sentences to the longest, and a turn that stopped mid-cycle would
    compare one contender's short batches with another's long ones (measured: per-round
    ratios spread from 1.4x to 12x between contenders 1.1x apart).
    """

    def call(feed: Feeds) -> tuple[float, float]:
        start = time.perf_counter()
        runtime.run(feed)
        return time.perf_counter() - start, float(rows(feed))

    def unit() -> list[tuple[float, float]]:
        call(feeds[0])
        calls: list[tuple[float, float]] = []
        while not calls or sum(seconds for seconds, _ in calls) < min_seconds:
            calls += [call(feed) for feed in feeds]
        return calls

    return unit


def time_runtime(runtime: Runtime, singles: Sequence[Feeds], batches: Sequence[Feeds],
                 repeats: int, warmup: int, rows: Rows) -> tuple[float, float, float]:
    """(p50 ms, p99 ms) at batch 1 and samples/s at the serving batch size (median of passes)."""
    runtime.prepare(batches)
    for feeds in list(singles[:warmup]) + list(batches[:warmup]):
        runtime.run(feeds)
    latencies = latencies_ms(runtime, singles, repeats)
    passes = max(3, repeats // max(1, len(batches)))
    rates = [batches_per_s(runtime, batches, rows) for _ in range(passes)]
    return float(np.percentile(latencies, 50)), float(np.percentile(latencies, 99)), float(np.median(rates))


def energy_per_inference(runtime: Runtime, batches: Sequence[Feeds], device: str, rows: Rows,
                         min_seconds: float | None = None) -> tuple[float | None, str | None]:
    """Joules per sample at the serving batch size, and where the figure came from.

    Runs the batches round and round for at least ``min_seconds`` (power readings are
    averaged over about a second, energy counters tick coarsely), inside an ``EnergyMeter``
    for the device. (None, None) at once when the device reports no energy here.
    """
    from inferno.hardware.power import MIN_ENERGY_WINDOW_S, EnergyMeter

    if not EnergyMeter.available(device):
        return None, None
    window = MIN_ENERGY_WINDOW_S if min_seconds is None else min_seconds
    samples = 0
    with EnergyMeter(device) as meter:
        start = time.perf_counter()
        while time.perf_counter() - start < window:
            for feeds in batches:
                runtime.run(feeds)
                samples += rows(feeds)
    if meter.joules is None or samples == 0:
        return None, None
    return meter.joules / samples, meter.source


SPIN_LOOPS = 200_000
"""Iterations of the fixed pure-Python loop ``spin_ms`` times (about 10 ms on a 2020s core)."""


_LOCATION = re.compile(
    r"(exception from |check .* failed at |at |in )?\S+\.(c|cc|cpp|cxx|h|hpp|py)(:\d+)+:?", re.IGNORECASE
)
ERROR_CHARS = 300


def error_message(exc: BaseException) -> str:
    """``Type: the first line that says something`` (OpenVINO's first lines name only the
    source file that raised), at most ``ERROR_CHARS`` characters."""
    lines = [line.strip() for line in str(exc).splitlines()]
    telling = [line for line in lines if line and not _LOCATION.fullmatch(line)]
    text = (telling or lines or [""])[0]
    return f"{type(exc).__name__}: {text}"[:ERROR_CHARS]


def spin_ms(tries: int = 3) -> float:
    """The best of ``tries`` runs of a fixed pure-Python loop, in ms: a yardstick of how fast
    this process runs now, compared before and after the measurements (well under 0.1 s)."""
    best = float("inf")
    for _ in range(tries + 1):  # the first run only warms up (bytecode caches, clock ramp-up)
        start = time.perf_counter()
        total = 0
        for i in range(SPIN_LOOPS):
            total += i * i
        if _ > 0:
            best = min(best, (time.perf_counter() - start) * 1e3)
    return best


@dataclass(frozen=True)
class LoadReading:
    """What ``MachineLoad`` saw over a stretch of measurements."""

    seconds: float
    foreign_share: float | None
    """CPU time other processes used on this process's CPUs, as a share of their capacity
    over the stretch (0: nothing else ran; None: the system does not say)."""
    spin_before_ms: float
    spin_after_ms: float

    @property
    def spin_ratio(self) -> float:
        """Spin time after over before: above 1, this process ran slower at the end."""
        return self.spin_after_ms / max(self.spin_before_ms, 1e-9)


class MachineLoad:
    """Times ``spin_ms`` on entry and exit and counts the other processes' CPU use in between."""

    def __init__(self) -> None:
        self._cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        self._proc = psutil.Process()
        self.reading: LoadReading | None = None

    def _busy(self) -> tuple[float, float] | None:
        """(seconds all processes were busy on our CPUs, seconds this process was)."""
        try:
            per_cpu = psutil.cpu_times(percpu=True)
            cpus = self._cpus if self._cpus is not None else range(len(per_cpu))
            busy = sum(_busy_seconds(per_cpu[i]) for i in cpus if i < len(per_cpu))
            own = self._proc.cpu_times()
        except (OSError, psutil.Error):
            return None
        return busy, own.user + own.system + own.children_user + own.children_system

    def __enter__(self) -> MachineLoad:
        self._spin = spin_ms()
        self._start = time.perf_counter()
        self._busy_start = self._busy()
        return self

    def __exit__(self, *exc: object) -> None:
        seconds = time.perf_counter() - self._start
        end = self._busy()
        share = None
        if self._busy_start is not None and end is not None and seconds > 0:
            cpus = len(self._cpus) if self._cpus else (os.cpu_count() or 1)
            foreign = (end[0] - self._busy_start[0]) - (end[1] - self._busy_start[1])
            share = min(max(foreign / (seconds * cpus), 0.0), 1.0)
        self.reading = LoadReading(seconds, share, self._spin, spin_ms())


_BUSY_FIELDS = ("user", "nice", "system", "irq", "softirq", "steal")
"""Busy CPU time as ``/proc/stat`` splits it (guest time is already inside user); steal is
time the hypervisor gave to other machines: load as far as this process can tell."""


def _busy_seconds(times: object) -> float:
    return float(sum(getattr(times, name, 0.0) for name in _BUSY_FIELDS))
