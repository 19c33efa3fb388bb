"""Where a v2 server is: its URL checked once, its host and port, and the one line said when
it cannot be reached.

A client built on a checked URL contacts that host and nothing else: no path, query or user
name can slip in, no proxy variable is read and no redirect is followed (both clients answer
a 3xx as the status it is).
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from inferno.errors import ConfigError

DEFAULT_URL = "http://127.0.0.1:8000"
"""``inferno serve``'s HTTP address."""

HINT = "is `inferno serve` running?"


def check_url(url: str, option: str = "--url", grpc: bool = False) -> str:
    """Return ``url`` as ``scheme://host[:port]`` (no trailing slash); ``option`` names it in errors.

    ``grpc`` accepts ``grpc://host[:port]`` too.

    Raises:
        ConfigError: when it is not ``http(s)://host[:port]`` (a path, query, fragment or
            user name would make the generator contact something other than the server).
    """
    schemes = ("http", "https", "grpc") if grpc else ("http", "https")
    expected = (
        "expected http(s)://host[:port] or grpc://host[:port], e.g. "
        if grpc
        else "expected http(s)://host[:port], e.g. "
    ) + DEFAULT_URL
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{option} {url!r}: {exc}; {expected}") from exc
    if parts.scheme not in schemes or not parts.hostname:
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


@dataclass(frozen=True)
class Address:
    """Where an ``http(s)://host[:port]`` URL points."""

    host: str
    port: int
    tls: bool

    @classmethod
    def of(cls, url: str) -> Address:
        parts = urlsplit(url)
        tls = parts.scheme == "https"
        return cls(parts.hostname or "", parts.port or (443 if tls else 80), tls)

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.tls else 80
        return host if self.port == default else f"{host}:{self.port}"


def reason(exc: BaseException | str, timeout_s: float | None = None) -> str:
    """Why no answer came, in a few words: ``connection refused``, ``no answer within 5 s``.

    ``exc`` is the exception a client raised (an OSError, a timeout, or one wrapping an
    OSError as ``os_error``), or the reason already in words (gRPC's status details).
    """
    if isinstance(exc, str):
        return exc
    os_error = getattr(exc, "os_error", exc)  # a wrapped OSError (client libraries), or the OSError
    if isinstance(os_error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError, socket.timeout)):
        return "no answer in time" if timeout_s is None else f"no answer within {timeout_s:g} s"
    if isinstance(os_error, OSError) and os_error.strerror:
        return os_error.strerror.lower()
    return str(exc) or type(exc).__name__


def unreachable(
    url: str,
    exc: BaseException | str,
    timeout_s: float | None = None,
    *,
    subject: str = "",
    hint: str = HINT,
) -> str:
    """The one line for a server that does not answer: ``cannot reach URL: why — hint``.

    ``subject`` goes before the URL (``"the cloud at "``); ``hint`` says what to check.
    """
    return f"cannot reach {subject}{url}: {reason(exc, timeout_s)} — {hint}"
