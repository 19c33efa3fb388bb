"""The results of one ``accelerate`` run: every measurement, the choice, and why."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from inferno.runtimes.base import device_of


@dataclass(frozen=True)
class Measurement:
    """One variant on one runtime. ``error`` is set when it could not be built or run."""

    variant: str
    runtime: str
    provider: str
    precision: str
    description: str = ""
    size_mb: float = 0.0
    latency_ms_p50: float = 0.0
    latency_ms_p99: float = 0.0
    throughput_per_s: float = 0.0
    peak_memory_mb: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    within_budget: bool = False
    speedup: float | None = None
    """Throughput (or for ``--objective latency``, batch-1 p50) relative to the FP32 graph on
    ONNX Runtime (CPU): for a row re-timed side by side (``speedup_rounds`` > 0), the median
    of the per-round ratios; else the ratio of two single sweep measurements (rough)."""
    error: str | None = None
    requested_provider: str | None = None
    """What the runtime was asked for (None: its CPU default); ``provider`` is what ran."""
    joules_per_inference: float | None = None
    """Energy per sample at the serving batch size, where the device reports energy."""
    energy_source: str | None = None
    speedup_low: float | None = None
    """Low end of the spread of the per-round ratios (their interquartile range); None when
    the row was not re-timed side by side."""
    speedup_high: float | None = None
    """High end of that interquartile range."""
    speedup_rounds: int = 0
    """Interleaved rounds ``speedup`` comes from (0: a single sweep measurement)."""
    speedup_eager: float | None = None
    """Median per-round ratio against the PyTorch eager baseline, where there is one."""
    criterion: str = ""
    """What the budget was judged on: ``accuracy``, ``agreement``, ``cosine``, ``snr``, ...
    (for a failure, every criterion tried)."""
    integer_ops: int | None = None
    """Nodes of the variant's graph that compute or convert in integers (None: unknown)."""
    kernels: str | None = None
    """Which ISA paths the compute ran on (``Runtime.kernels``): OpenVINO's executed primitives
    counted (``brgemm_avx512_i8 ×36 (FullyConnected), ...``), or for ONNX Runtime what the CPU
    offers MLAS, said to be not observed; None where the runtime tells nothing."""

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def device(self) -> str:
        return device_of(self.requested_provider)

    @property
    def target(self) -> str:
        """``runtime`` or ``runtime:provider``: where it ran."""
        return target_label(self.runtime, self.requested_provider)

    @property
    def key(self) -> str:
        return f"{self.variant}@{self.target}"

    @property
    def retimed(self) -> bool:
        """The speed-up comes from interleaved rounds, with its spread."""
        return self.speedup_rounds > 0 and self.speedup_low is not None and self.speedup_high is not None


def speed(m: Measurement, objective: str) -> float:
    """Higher is faster: throughput, or minus the batch-1 p50 for ``objective="latency"``."""
    return -m.latency_ms_p50 if objective == "latency" else m.throughput_per_s


def target_label(runtime: str, requested_provider: str | None) -> str:
    return runtime if requested_provider is None else f"{runtime}:{requested_provider}"


@dataclass(frozen=True)
class Chosen:
    name: str
    runtime: str
    provider: str
    precision: str
    throughput_per_s: float
    latency_ms_p50: float
    metrics: dict[str, float]
    within_budget: bool
    speedup: float | None
    path: str
    reason: str
    requested_provider: str | None = None
    joules_per_inference: float | None = None
    speedup_low: float | None = None
    speedup_high: float | None = None
    speedup_rounds: int = 0
    speedup_eager: float | None = None
    criterion: str = ""
    integer_ops: int | None = None
    kept_within_noise: bool = False
    """The fastest candidate did not beat the FP32 graph beyond the spread: the FP32 graph was kept."""
    kernels: str | None = None
    """``Measurement.kernels`` of the chosen row."""

    @property
    def key(self) -> str:
        return f"{self.name}@{target_label(self.runtime, self.requested_provider)}"

    @property
    def device(self) -> str:
        return device_of(self.requested_provider)


@dataclass(frozen=True)
class Report:
    model: str
    source: str
    task: str
    objective: str
    batch_size: int
    threads: int
    budget: dict[str, float]
    evaluation: dict[str, Any]
    """Where the evaluation data came from, how many samples, whether synthesized."""
    reference: dict[str, Any]
    """Which run produced the reference outputs, and its own metrics (e.g. accuracy on labels)."""
    hardware: dict[str, Any]
    baseline: Measurement | None
    variants: tuple[Measurement, ...]
    chosen: Chosen
    skipped: dict[str, str] = field(default_factory=dict)
    """Recipes not built, with the reason (pass does not apply, build failed)."""
    duration_s: float = 0.0
    inferno_version: str = ""
    device: str = "cpu"
    """``--device``: cpu, cuda or all."""
    notes: tuple[str, ...] = ()
    """What the run could not do here (e.g. no GPU runtime found), and warnings on the figures
    (a loaded machine, a wide spread)."""
    timing: dict[str, Any] = field(default_factory=dict)
    """How the speed-ups were taken: ``anchor`` (what they are relative to), ``rounds``,
    ``window_s``, ``spread`` (what the low/high ends are), and the machine's load
    (``foreign_cpu_share``, ``spin_before_ms``/``spin_after_ms``, ``loaded``, ``uncertain``)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        data = dict(data)
        base = data.pop("baseline")
        return cls(
            baseline=Measurement(**base) if base else None,
            variants=tuple(Measurement(**m) for m in data.pop("variants")),
            chosen=Chosen(**data.pop("chosen")),
            notes=tuple(data.pop("notes", ())),
            **data,
        )

    @classmethod
    def load(cls, path: Path) -> Report:
        return cls.from_dict(json.loads(Path(path).read_text()))
