"""Typed settings shared by the CLI, the Python API and the files in a model repository.

Environment variables are read here and nowhere else; each has the ``INFERNO_`` prefix:

- ``INFERNO_CACHE_DIR``: where bundled models are built (default: the user cache directory).
- ``INFERNO_THREADS``: default runtime thread count (default: all cores).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from inferno.errors import ConfigError

Objective = Literal["throughput", "latency"]


class Budget(BaseModel):
    """How much accuracy an optimized variant may lose against the FP32 reference."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_accuracy_drop: float = Field(0.01, ge=0.0, le=1.0)
    """Classifiers: largest allowed drop of accuracy (or top-1 agreement), as a fraction (0.01 = 1 point)."""

    min_cosine_mean: float = Field(0.99, ge=-1.0, le=1.0)
    """Embeddings and other outputs: smallest allowed mean cosine similarity to the reference."""

    min_cosine_min: float = Field(0.95, ge=-1.0, le=1.0)
    """Embeddings and other outputs: smallest allowed worst-case cosine similarity."""

    min_snr_db: float = Field(30.0, ge=0.0, le=300.0)
    """Regression and other outputs (not classifiers, not embeddings): the alternative to the
    cosine criteria, smallest allowed signal-to-noise ratio in dB over all output elements,
    ``10·log10(Σref² / Σ(out−ref)²)``. Cosine misjudges rows near zero (a detector's scores
    of ~1e-5 that differ by 1e-7 can have cosine 0.97): either criterion passing is enough.
    30 dB is an error energy of 0.1 % of the output's."""

    @model_validator(mode="after")
    def _mean_not_below_min(self) -> Budget:
        if self.min_cosine_min > self.min_cosine_mean:
            raise ValueError(
                f"min_cosine_min ({self.min_cosine_min}) cannot exceed "
                f"min_cosine_mean ({self.min_cosine_mean})"
            )
        return self

    def describe(self) -> str:
        return (
            f"accuracy drop <= {self.max_accuracy_drop * 100:g} pt; "
            f"cosine mean >= {self.min_cosine_mean:g}, min >= {self.min_cosine_min:g} "
            f"(regression/other: or SNR >= {self.min_snr_db:g} dB)"
        )


_BUDGET_KEYS = {
    "accuracy": "max_accuracy_drop",
    "drop": "max_accuracy_drop",
    "cosine_mean": "min_cosine_mean",
    "cos_mean": "min_cosine_mean",
    "cosine_min": "min_cosine_min",
    "cos_min": "min_cosine_min",
    "snr": "min_snr_db",
    "snr_db": "min_snr_db",
}


def parse_budget(text: str) -> Budget:
    """Parse ``--budget``.

    Accepts an accuracy drop (``1%``, ``0.5pt``, ``0.005``) and/or ``key=value`` pairs
    separated by commas: ``accuracy=0.5%``, ``cosine_mean=0.995``, ``cosine_min=0.97``,
    ``snr=30dB`` (or ``snr_db=30``: the signal-to-noise ratio that regression and other
    outputs may pass instead of the cosine criteria; a bare ``30dB`` means the same).

    Raises:
        ConfigError: naming the part that could not be read.
    """
    fields: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, _, value = part.rpartition("=")
        default = "snr" if value.strip().lower().endswith("db") else "accuracy"
        field = _BUDGET_KEYS.get(key.strip().lower() or default)
        if field is None:
            raise ConfigError(
                f"--budget: unknown key {key!r}; expected one of {', '.join(sorted(_BUDGET_KEYS))}"
            )
        if field == "min_snr_db":
            fields[field] = _parse_decibels(value.strip())
        else:
            fields[field] = _parse_number(value.strip(), percent=field == "max_accuracy_drop")
    try:
        return Budget(**fields)
    except ValidationError as exc:
        raise ConfigError(f"--budget {text!r}: {describe_validation_error(exc)}") from exc


def _parse_number(value: str, *, percent: bool) -> float:
    match = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*(%|pt|points?)?", value)
    if match is None:
        raise ConfigError(f"--budget: expected a number like 1% or 0.99, got {value!r}")
    number = float(match.group(1))
    if match.group(2) or (percent and number >= 1):
        return number / 100
    return number


def _parse_decibels(value: str) -> float:
    match = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*(db)?", value, flags=re.IGNORECASE)
    if match is None:
        raise ConfigError(f"--budget: snr: expected decibels like 30dB or 30, got {value!r}")
    return float(match.group(1))


def describe_validation_error(exc: ValidationError) -> str:
    """The first error as ``field: message (got value)``, for one-line messages."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "value"
    return f"{where}: {err['msg']} (got {err.get('input')!r})"


class AccelerateConfig(BaseModel):
    """Settings of one ``inferno accelerate`` run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    budget: Budget = Budget()
    objective: Objective = Field("throughput", description=(
        "Rank by 'throughput' (at the batch size) or 'latency' (batch-1 p50)."))
    """Rank variants by throughput at ``batch_size`` or by batch-1 p50 latency."""

    batch_size: int = Field(32, ge=1, le=4096, description="Serving batch size for throughput.")
    """The serving batch size at which throughput is measured."""

    threads: int = Field(default_factory=lambda: default_threads(), ge=1, le=1024)
    """Runtime intra-op threads (default: all cores, or ``INFERNO_THREADS``)."""

    repeats: int = Field(20, ge=3, le=10_000, description="Timed repetitions per measurement.")
    """Timed repetitions per measurement; medians are reported."""

    warmup: int = Field(3, ge=1, le=1000)
    """Untimed runs before timing."""

    variants: tuple[str, ...] | None = None
    """Only build these variants (names from ``inferno.tuning.recipes``); None means all that apply."""

    runtimes: tuple[str, ...] | None = None
    """Only measure on these runtimes; None means every one available."""

    device: Literal["cpu", "cuda", "all"] = Field("all", description=(
        "Where candidates run: cpu, cuda (error without a GPU), or all (CPU and every GPU runtime found)."))
    """Where candidates run: ``cpu``; ``cuda`` (an error when no GPU runtime is usable);
    ``all``: the CPU and every GPU runtime found (the CPU alone, with a note, without one)."""

    max_eval_samples: int | None = Field(None, ge=1, description="Use at most this many evaluation samples.")
    """Cap on evaluation samples (for quick runs); None uses them all."""


def default_threads() -> int:
    env = os.environ.get("INFERNO_THREADS")
    if env:
        try:
            value = int(env)
        except ValueError as exc:
            raise ConfigError(f"INFERNO_THREADS: expected a whole number, got {env!r}") from exc
        if value < 1:
            raise ConfigError(f"INFERNO_THREADS: expected >= 1, got {value}")
        return value
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cache_dir() -> Path:
    """Where bundled models are built and cached."""
    env = os.environ.get("INFERNO_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("inferno"))


def serve_token() -> str | None:
    """The server's bearer token from ``INFERNO_SERVE_TOKEN``, if set (safer than ``--token``: not in ``ps``)."""
    return os.environ.get("INFERNO_SERVE_TOKEN") or None
