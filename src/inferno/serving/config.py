"""What ``inferno serve`` is told: the server's settings and each model's batching settings.

The CLI, ``REPO/<model>/serve.json`` and the Python API all fill these same models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inferno.config import describe_validation_error
from inferno.errors import ConfigError

MODEL_CONFIG_FILE = "serve.json"
"""Per-model overrides of :class:`ModelServeConfig`, beside the version folders."""


class ModelServeConfig(BaseModel):
    """How one model is batched, cached and guarded."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_batch_size: int | None = Field(None, ge=1, le=4096, description=(
        "Most rows per runtime call and per request (default: 64 for CPU plans, 256 for GPU plans)."))
    """Most rows one runtime call takes; also the most rows one request may carry. None: the
    plan's device decides: 64 on the CPU, 256 on a GPU (a GPU needs large batches to fill)."""
    max_queue_delay_us: int = Field(10_000, ge=0, le=10_000_000, description=(
        "How long a batch may wait to fill to the size of recent batches (0: run when an instance is free)."))
    """How long the first request of a batch may wait for others — but only for as many rows
    as recent batches had, so a lone client never waits. 0: run as soon as an instance is
    free (under load, requests still gather while the instance is busy)."""
    max_queue_size: int = Field(1024, ge=1, description="Waiting requests beyond this get 503.")
    """Requests waiting beyond this are refused with 503 and Retry-After."""
    instances: int = Field(1, ge=1, le=64, description="Model instances per version.")
    """Model instances (runtime sessions), each with its own batch in flight."""
    threads: int | None = Field(None, ge=1, description="Runtime threads per instance (default: the plan's).")
    """Runtime threads per instance (default: the plan's)."""
    cache_bytes: int = Field(0, ge=0)
    """Response cache size in bytes; 0 turns the cache off."""
    timeout_s: float = Field(30.0, gt=0, description="Default per-request timeout, seconds.")
    """Default per-request timeout; a request's own ``timeout`` parameter (µs) may shorten it."""
    group_by_length: bool = Field(True, description=(
        "Split a text batch into runtime calls of similar lengths when that costs less padding."))
    """Split a text batch into runtime calls of similar lengths when that costs less padding."""
    drift: bool = Field(True, description="Watch for drift against each version's reference profile.")
    """Watch for drift against the version's reference profile (``profile.json``), when it has one."""
    drift_window: int = Field(750, ge=10, le=1_000_000, description="Rows in the drift window (first verdict when full).")
    """Rows in the sliding window; the first verdict comes once it is full."""
    drift_check_every: int = Field(50, ge=1, description="Rows between two drift checks.")
    """Rows between two drift checks."""
    drift_check_interval_s: float = Field(0.5, ge=0, description="Seconds between two drift checks at least.")
    """Seconds between two drift checks at least (bounds the cost under heavy traffic)."""
    drift_share: float = Field(0.5, gt=0, le=1, description="Drift when at least this share of features drifted.")
    """Drift is declared when at least this share of the features drifted."""
    drift_method: Literal["auto", "ks", "chi2", "jensenshannon", "psi"] = Field("auto", description=(
        "Per-feature test: auto (KS/chi-square for references up to 1,000 rows, else Jensen-Shannon), "
        "ks, chi2, jensenshannon or psi."))
    """auto: tests (KS, chi-square, p < 0.05) for references up to 1,000 rows, Jensen–Shannon
    distance (> 0.1) beyond; or one method for every feature."""
    drift_threshold: float | None = Field(None, gt=0, description=(
        "Distance threshold for jensenshannon (default 0.1) or psi (default 0.2)."))
    """Distance threshold for jensenshannon (default 0.1) or psi (default 0.2)."""
    validation: Literal["off", "count", "reject"] = Field("count", description=(
        "Inputs out of range, NaN/inf, unknown tokens: count, reject (400) or off."))
    """Inputs checked against the profile (NaN/inf, out of the observed range, unknown tokens):
    counted in inferno_validation_failures_total, or rejected with 400."""
    validation_margin: float = Field(0.0, ge=0, description=(
        "Widen the observed range by this share of its span before calling a value out of range."))
    """Widen the observed range by this share of its span before calling a value out of range."""


CPU_MAX_BATCH = 64
GPU_MAX_BATCH = 256


def default_max_batch(device: str) -> int:
    """``max_batch_size`` when none is set: what the plan's device needs to be kept busy."""
    return GPU_MAX_BATCH if device == "cuda" else CPU_MAX_BATCH


class ServeConfig(BaseModel):
    """The whole server."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    repository: Path
    """A model repository written by ``inferno accelerate``."""
    models: tuple[str, ...] = ()
    """Models to load at start (default: every model in the repository)."""
    versions: Literal["latest", "all"] = Field("latest", description="Versions to load: latest or all.")
    """Which versions of each model are loaded."""
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8000, ge=0, le=65535, description="Port to listen on.")
    grpc_port: int | None = Field(None, ge=0, le=65535)
    """Triton's gRPC service on this port (the [grpc] extra; 0 picks a free one); None: off."""
    token: str | None = None
    """Bearer token required on everything but the health endpoints."""
    max_body_bytes: int = Field(64 * 2**20, ge=1024)
    """Request bodies beyond this are refused with 413."""
    max_response_bytes: int | None = Field(None, ge=1024)
    """Responses beyond this are refused with 400 naming the limit, before the model runs
    when the size is known from the request. None: the body limit (a request may not ask
    for more than it could have sent)."""
    trust: bool = Field(False, description=(
        "Let plans import Python code (torch plans' module:attr source) and name files outside the repository."))
    """Plans may import Python code (a torch plan's ``module:attr`` source) and name files
    outside the repository. Off: such a plan is refused with the reason."""
    max_connections: int = Field(1000, ge=1, description=(
        "Open connections at most; beyond it idle ones are closed, oldest first, else 503."))
    """Open connections at most. Beyond it, idle ones (no request in flight) are closed,
    oldest first, to make room; when every one is busy, the new one is answered 503."""
    keep_alive_timeout_s: float = Field(5.0, gt=0, description="Close a connection idle this long, seconds.")
    """An idle connection (a new one included, before its first byte) is closed after this."""
    header_timeout_s: float = Field(10.0, gt=0, description=(
        "A request's headers must arrive within this, seconds from its first byte."))
    """A request's headers must be complete this long after its first byte (slowloris)."""
    body_timeout_s: float = Field(60.0, gt=0, description=(
        "A request's body must arrive within this, seconds after its headers."))
    """A request's body must be complete this long after its headers."""
    graceful_timeout_s: float = Field(30.0, ge=0)
    """On SIGTERM/SIGINT, how long in-flight requests may take to finish."""
    log_predictions: Path | None = Field(None, description=(
        "Write input summaries and outputs to rotating JSONL files in this folder."))
    """Folder for the prediction log (input summaries and outputs, rotating JSONL); None: off."""
    log_max_bytes: int = Field(256 * 2**20, ge=64 * 2**10)
    """Disk budget of the prediction log; the oldest files go first."""
    strict_readiness: bool = Field(False, description=(
        "/v2/health/ready only when every model loaded (default: once one did; failed ones show in the index)."))
    """``/v2/health/ready`` waits for every model to load (Triton's default). False: ready
    once startup is over with at least one model loaded; the others show UNAVAILABLE in the
    repository index, with the reason."""
    defaults: ModelServeConfig = ModelServeConfig()
    """Batching settings for models without their own ``serve.json``."""

    @property
    def response_limit(self) -> int:
        return self.max_response_bytes or self.max_body_bytes

    def for_model(self, name: str) -> ModelServeConfig:
        """The model's settings: the defaults, overridden by ``REPO/<name>/serve.json``."""
        path = self.repository / name / MODEL_CONFIG_FILE
        if not path.exists():
            return self.defaults
        try:
            overrides = json.loads(path.read_text())
        except ValueError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
        if not isinstance(overrides, dict):
            raise ConfigError(f"{path}: expected a JSON object of settings, got {type(overrides).__name__}")
        try:
            return ModelServeConfig.model_validate({**self.defaults.model_dump(), **overrides})
        except ValidationError as exc:
            raise ConfigError(f"{path}: {describe_validation_error(exc)}") from exc
