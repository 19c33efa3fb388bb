"""Settings of one ``inferno bench`` run, validated before any request is sent."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from inferno.errors import ConfigError
from inferno.protocol.address import DEFAULT_URL, check_url

DEFAULT_GRPC_PORT = 8001
"""Triton's (and ``inferno serve``'s) gRPC port."""
DEFAULT_CONCURRENCY = (1, 16, 64)
MAX_CLIENTS = 64
"""Load-generator processes at most (``--clients``)."""
MAX_IN_FLIGHT = 1024
"""Open loop: requests outstanding at once before new arrivals are dropped as "client saturated"."""

Concurrency = Annotated[int, Field(ge=1, le=MAX_IN_FLIGHT)]
Rate = Annotated[float, Field(gt=0, le=100_000)]


class BenchConfig(BaseModel):
    """Settings of one load-generator run against an Open Inference Protocol v2 server."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(min_length=1)
    """The served model's name."""

    url: str = DEFAULT_URL
    """The server, ``http(s)://host[:port]`` or ``grpc://host[:port]``; the generator contacts
    nothing else (with ``--protocol grpc`` and an http(s) URL: that host on ``grpc_port``)."""

    protocol: Literal["http", "grpc"] = "http"
    """``http``: POST /v2/models/{m}/infer; ``grpc``: Triton's ModelInfer RPC (the [grpc] extra).
    A ``grpc://`` URL implies ``grpc``."""

    binary: bool = False
    """HTTP: send tensors in Triton's binary tensor extension (and ask for binary outputs)
    instead of JSON."""

    grpc_port: int | None = Field(None, ge=1, le=65535)
    """gRPC: the server's gRPC port when ``url`` is http(s):// (default 8001); a grpc:// URL
    names its own."""

    clients: int | None = Field(None, ge=1, le=MAX_CLIENTS)
    """Load-generator processes sharing each point (results merged); None: enough that one
    process is never the bottleneck, up to the cores this process may run on."""

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
        return check_url(value, grpc=True)  # raises ConfigError itself: pydantic lets it through

    @model_validator(mode="before")
    @classmethod
    def _defaults_from_others(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        # --rate without --concurrency means "open loop only", not both.
        if data.get("rates") and "concurrency" not in data:
            data = {**data, "concurrency": ()}
        # a grpc:// URL speaks gRPC unless told otherwise (and then the check below says no)
        url = data.get("url")
        if isinstance(url, str) and url.strip().lower().startswith("grpc://"):
            if data.get("protocol") is None:
                data = {**data, "protocol": "grpc"}
        elif data.get("protocol") is None:
            data = {k: v for k, v in data.items() if k != "protocol"}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> BenchConfig:
        if not self.concurrency and not self.rates:
            raise ValueError("--concurrency and --rate are both empty: give at least one level")
        scheme = self.url.split("://", 1)[0]
        if self.protocol == "http" and scheme == "grpc":
            raise ValueError(
                f"--protocol http: expected an http(s):// --url, got {self.url!r} "
                "(a grpc:// URL speaks --protocol grpc)"
            )
        if self.protocol == "grpc":
            if scheme == "https":
                raise ValueError(
                    f"--protocol grpc: expected an http:// or grpc:// --url, got {self.url!r} "
                    "(gRPC over TLS is not supported by the load generator)"
                )
            if self.binary:
                raise ValueError(
                    "--binary: Triton's binary tensor extension is HTTP's; --protocol grpc "
                    "sends raw tensor bytes already"
                )
            port = urlsplit(self.url).port if scheme == "grpc" else None
            if port is not None and self.grpc_port is not None and port != self.grpc_port:
                raise ValueError(
                    f"--grpc-port {self.grpc_port} and --url {self.url!r} name different ports; "
                    "give one of them"
                )
        elif self.grpc_port is not None:
            raise ValueError(
                f"--grpc-port {self.grpc_port}: only with --protocol grpc (got --protocol http)"
            )
        return self

    @property
    def grpc_address(self) -> str:
        """``host:port`` of the gRPC service (``protocol == "grpc"``)."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        port = parts.port if parts.scheme == "grpc" else None
        return f"{host}:{port or self.grpc_port or DEFAULT_GRPC_PORT}"

    @property
    def server(self) -> str:
        """Where the load goes, as a URL: ``url`` for HTTP, ``grpc://host:port`` for gRPC."""
        return f"grpc://{self.grpc_address}" if self.protocol == "grpc" else self.url

    def levels(self) -> list[tuple[Literal["concurrency", "rate"], float]]:
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
