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

    max_batch_size: int = Field(64, ge=1, le=4096)
    """Most rows one runtime call takes; also the most rows one request may carry."""
    max_queue_delay_us: int = Field(10_000, ge=0, le=10_000_000)
    """How long the first request of a batch may wait for others — but only for as many rows
    as recent batches had, so a lone client never waits. 0: run as soon as an instance is
    free (under load, requests still gather while the instance is busy)."""
    max_queue_size: int = Field(1024, ge=1)
    """Requests waiting beyond this are refused with 503 and Retry-After."""
    instances: int = Field(1, ge=1, le=64)
    """Model instances (runtime sessions), each with its own batch in flight."""
    threads: int | None = Field(None, ge=1)
    """Runtime threads per instance (default: the plan's)."""
    cache_bytes: int = Field(0, ge=0)
    """Response cache size in bytes; 0 turns the cache off."""
    timeout_s: float = Field(30.0, gt=0)
    """Default per-request timeout; a request's own ``timeout`` parameter (µs) may shorten it."""
    group_by_length: bool = True
    """Split a text batch into runtime calls of similar lengths when that costs less padding."""


class ServeConfig(BaseModel):
    """The whole server."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    repository: Path
    """A model repository written by ``inferno accelerate``."""
    models: tuple[str, ...] = ()
    """Models to load at start (default: every model in the repository)."""
    versions: Literal["latest", "all"] = "latest"
    """Which versions of each model are loaded."""
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    token: str | None = None
    """Bearer token required on everything but the health endpoints."""
    max_body_bytes: int = Field(64 * 2**20, ge=1024)
    """Request bodies beyond this are refused with 413."""
    graceful_timeout_s: float = Field(30.0, ge=0)
    """On SIGTERM/SIGINT, how long in-flight requests may take to finish."""
    defaults: ModelServeConfig = ModelServeConfig()
    """Batching settings for models without their own ``serve.json``."""

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
