"""Settings of one ``inferno bench`` run, validated before any request is sent."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from inferno.errors import ConfigError

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_CONCURRENCY = (1, 16, 64)
MAX_IN_FLIGHT = 1024
"""Open loop: requests outstanding at once before new arrivals are dropped as "client saturated"."""

Concurrency = Annotated[int, Field(ge=1, le=MAX_IN_FLIGHT)]
Rate = Annotated[float, Field(gt=0, le=100_000)]


def check_url(url: str, option: str = "--url") -> str:
    """Return ``url`` as ``scheme://host[:port]`` (no trailing slash); ``option`` names it in errors.

    Raises:
        ConfigError: when it is not ``http(s)://host[:port]`` (a path, query, fragment or
            user name would make the generator contact something other than the server).
    """
    expected = "expected http(s)://host[:port], e.g. " + DEFAULT_URL
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{option} {url!r}: {exc}; {expected}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{option} {url!r}: {expected}")
    if (
        parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username
        or "@" in parts.netloc
    ):
        raise ConfigError(f"{option} {url!r}: {expected}, without a path, query or user name")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


class BenchConfig(BaseModel):
    """Settings of one load-generator run against an Open Inference Protocol v2 server."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(min_length=1)
    """The served model's name."""

    url: str = DEFAULT_URL
    """The server, ``http(s)://host[:port]``; the generator contacts nothing else."""

    version: str | None = Field(None, min_length=1)
    """A model version; None lets the server choose."""

    concurrency: tuple[Concurrency, ...] = DEFAULT_CONCURRENCY
    """Closed loop: one point per level, that many requests outstanding, each sent as the last returns."""

    rates: tuple[Rate, ...] = ()
    """Open loop: one point per rate (requests/s), Poisson arrivals. Given alone, only these run."""

    duration_s: float = Field(10.0, gt=0, le=3600)
    """Measured seconds per point."""

    warmup_s: float = Field(2.0, ge=0, le=600)
    """Seconds of load before each point, not recorded."""

    max_requests: int | None = Field(None, ge=1)
    """Stop a point once this many requests are recorded (even before ``duration_s``)."""

    batch: int = Field(1, ge=1, le=65_536)
    """Rows per request (the first dimension)."""

    data: Path | None = None
    """An ``.npz`` with arrays named like the inputs; first axis = samples."""

    text: Path | None = None
    """A text file, one request string per line, for BYTES inputs."""

    timeout_s: float = Field(30.0, gt=0, le=600)
    """Per-request timeout; a request past it counts as an error."""

    token: str | None = None
    """Sent as ``Authorization: Bearer <token>``."""

    seed: int = Field(0, ge=0)
    """Seeds synthesized inputs and Poisson arrivals."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_url(value)  # raises ConfigError itself: pydantic lets it through

    @model_validator(mode="before")
    @classmethod
    def _rates_alone(cls, data: Any) -> Any:
        # --rate without --concurrency means "open loop only", not both.
        if isinstance(data, dict) and data.get("rates") and "concurrency" not in data:
            return {**data, "concurrency": ()}
        return data

    @model_validator(mode="after")
    def _some_point(self) -> BenchConfig:
        if not self.concurrency and not self.rates:
            raise ValueError("--concurrency and --rate are both empty: give at least one level")
        return self

    def levels(self) -> list[tuple[str, float]]:
        """The points to run, in order: ``("concurrency", n)`` then ``("rate", r)``."""
        return [("concurrency", c) for c in self.concurrency] + [("rate", r) for r in self.rates]


_OPTIONS = {
    "duration_s": "--duration",
    "warmup_s": "--warmup",
    "timeout_s": "--timeout",
    "rates": "--rate",
    "max_requests": "--max-requests",
}


def make_config(**fields: Any) -> BenchConfig:
    """Build a BenchConfig from CLI options; a bad value names its option.

    Raises:
        ConfigError: ``--duration: Input should be greater than 0 (got -1.0)``.
    """
    try:
        return BenchConfig(**fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        message = err["msg"].removeprefix("Value error, ")
        if not loc:  # a cross-field check: its message names both fields
            raise ConfigError(message) from exc
        option = _OPTIONS.get(loc[0], "--" + loc[0].replace("_", "-"))
        raise ConfigError(f"{option}: {message} (got {err.get('input')!r})") from exc


def parse_list(option: str, text: str, kind: type[int] | type[float]) -> tuple[Any, ...]:
    """Parse ``1,16,64`` for ``option``.

    Raises:
        ConfigError: naming the option and the part that is not a number.
    """
    parts = [p.strip() for p in text.split(",") if p.strip()]
    what = "whole numbers" if kind is int else "numbers"
    try:
        values = tuple(kind(p) for p in parts)
    except ValueError as exc:
        raise ConfigError(f"{option}: expected {what} separated by commas, got {text!r}") from exc
    if not values:
        raise ConfigError(f"{option}: expected {what} separated by commas, got {text!r}")
    return values
