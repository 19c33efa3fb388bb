"""``inferno monitor``'s client: its settings, and the poller of a running server's drift endpoint.

The server's side: ``POST /v2/repository/index`` (Triton's repository index) lists the
models, and ``GET /v2/models/{model}/versions/{version}/drift`` answers one drift document
per model version (404 when the version has no reference profile).

Only the given URL is contacted: no proxies, no redirects followed (the requests go through
:class:`inferno.protocol.Client`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from inferno.errors import ConfigError, UserInputError
from inferno.protocol.address import DEFAULT_URL, check_url
from inferno.protocol.client import Client, Unreachable
from inferno.protocol.codec import error_text

log = logging.getLogger(__name__)

TIMEOUT_S = 5.0
"""Per-request timeout; a server slower than this counts as unreachable for that poll."""

Document = dict[str, Any]
"""One drift document, as the server sent it."""
Target = tuple[str, str, str | None]
"""``(model, version, problem)``: a version to poll when ``problem`` is None."""


class WatchConfig(BaseModel):
    """Settings of one ``inferno monitor`` run, validated before any request is sent."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = DEFAULT_URL
    """The server, ``http(s)://host[:port]``; nothing else is contacted."""

    models: tuple[str, ...] = ()
    """Models to watch; empty: every model with a READY version, as the index lists them."""

    interval_s: float = Field(2.0, gt=0, le=3600, allow_inf_nan=False)
    """Seconds from one poll to the next."""

    duration_s: float | None = Field(None, gt=0, allow_inf_nan=False)
    """Stop after this many seconds; None: at Ctrl-C."""

    token: str | None = None
    """Sent as ``Authorization: Bearer <token>``."""

    plot: Path | None = None
    """A ``.png`` drawn at the end: score/threshold of every feature over time."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_url(value, "URL")  # raises ConfigError itself: pydantic lets it through

    @field_validator("plot")
    @classmethod
    def _plot(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        if value.suffix.lower() != ".png":
            raise ConfigError(
                f"--plot {value}: expected a .png file, got {value.suffix or 'no suffix'}"
            )
        if not value.parent.is_dir():
            raise ConfigError(f"--plot {value}: folder {value.parent} does not exist")
        return value


_OPTIONS = {
    "interval_s": "--interval",
    "duration_s": "--duration",
    "models": "--model",
    "url": "URL",
}


def make_config(**fields: Any) -> WatchConfig:
    """Build a WatchConfig from CLI options; a bad value names its option.

    Raises:
        ConfigError: ``--interval: Input should be greater than 0 (got 0.0)``.
    """
    try:
        return WatchConfig(**fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        option = _OPTIONS.get(loc[0], "--" + loc[0]) if loc else "value"
        raise ConfigError(f"{option}: {err['msg']} (got {err.get('input')!r})") from exc


# -- polling -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Drift:
    """One model version at one poll: the server's document, or why there is none."""

    model: str
    version: str
    document: Document | None = None
    problem: str | None = None
    """``no profile (why)`` (404), ``not ready (LOADING)``, ``HTTP 500: ...``; None with a document."""


@dataclass(frozen=True)
class Snapshot:
    """One poll of the server."""

    at: float
    """``time.monotonic()`` when the poll started (for elapsed time)."""

    wall: float
    """``time.time()`` when the poll started (for display)."""

    entries: tuple[Drift, ...] = ()
    error: str | None = None
    """Why the server could not be polled at all (unreachable, refused); then no entries."""

    @property
    def documents(self) -> list[Document]:
        """The drift documents of this poll, in order (versions without one left out)."""
        return [e.document for e in self.entries if e.document is not None]


class Poller:
    """A synchronous client of one server's repository index and drift endpoints."""

    def __init__(self, url: str, token: str | None = None, timeout_s: float = TIMEOUT_S) -> None:
        self.url = url
        self.timeout_s = timeout_s
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._client = Client(url, timeout_s, headers)

    def _request(self, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """Send one request; returns (status, body) for any HTTP answer (a 3xx too).

        Raises:
            UserInputError: the server cannot be reached or does not answer in time.
        """
        try:
            response = self._client.request("GET" if body is None else "POST", path, body)
        except Unreachable as exc:
            raise UserInputError(str(exc)) from exc.cause
        return response.status, response.body

    def index(self) -> list[dict[str, Any]]:
        """The repository index: one ``{"name", "version", "state", "reason"}`` per version.

        Raises:
            UserInputError: unreachable, refused (401/403: names ``--token``) or not a list.
        """
        status, body = self._request("/v2/repository/index", b"{}")
        if status in (401, 403):
            raise UserInputError(
                f"{self.url} refused the repository index (HTTP {status}: "
                f"{error_text(body)}); pass the server's token with --token "
                "or INFERNO_SERVE_TOKEN"
            )
        if status != 200:
            raise UserInputError(
                f"{self.url}/v2/repository/index: HTTP {status}: {error_text(body)}"
            )
        rows = _loads(body)
        if not isinstance(rows, list) or not all(isinstance(r, dict) and "name" in r for r in rows):
            raise UserInputError(
                f"{self.url}/v2/repository/index: expected a list of models, got {body[:80]!r}"
            )
        return rows

    def drift(self, model: str, version: str) -> Drift:
        """The drift document of one model version, or the reason there is none.

        Raises:
            UserInputError: the server cannot be reached.
        """
        path = f"/v2/models/{quote(model, safe='')}/versions/{quote(version, safe='')}/drift"
        status, body = self._request(path)
        if status == 404:  # the server's reason: no reference profile, or drift watching off
            return Drift(model, version, problem=f"no profile ({error_text(body)})")
        if status != 200:
            return Drift(model, version, problem=f"HTTP {status}: {error_text(body)}")
        doc = _loads(body)
        if not isinstance(doc, dict) or not isinstance(doc.get("features"), list):
            return Drift(model, version, problem=f"not a drift document: {body[:80]!r}")
        return Drift(model, version, document=doc)

    def check(self, models: Sequence[str]) -> None:
        """Before watching: the server answers and serves every model named.

        Raises:
            UserInputError: the server cannot be reached or refuses.
            ConfigError: a name in ``models`` is not in the repository index.
        """
        served = {str(r["name"]) for r in self.index()}
        unknown = [m for m in models if m not in served]
        if unknown:
            raise ConfigError(
                f"--model {', '.join(unknown)}: not served at {self.url} "
                f"(it serves {', '.join(sorted(served)) or 'no models'})"
            )

    def poll(self, models: Sequence[str] = ()) -> Snapshot:
        """One poll of every selected model version; never raises for an absent server."""
        at, wall = time.monotonic(), time.time()
        try:
            entries = [
                self.drift(model, version)
                if problem is None
                else Drift(model, version, problem=problem)
                for model, version, problem in select(self.index(), models)
            ]
        except UserInputError as exc:
            log.debug("poll of %s failed: %s", self.url, exc)
            return Snapshot(at, wall, error=str(exc))
        return Snapshot(at, wall, tuple(entries))


def select(rows: Sequence[dict[str, Any]], models: Sequence[str] = ()) -> list[Target]:
    """What to poll: ``(model, version, problem)``; problem None means fetch its drift.

    Without ``models``: every READY version. A named model without a READY version keeps a
    row with the reason, so the view says why it has no numbers.
    """
    ready = [(str(r["name"]), str(r.get("version", ""))) for r in rows if r.get("state") == "READY"]
    if not models:
        return [(name, version, None) for name, version in ready]
    chosen: list[Target] = []
    for model in models:
        versions: list[Target] = [(name, v, None) for name, v in ready if name == model]
        if not versions:
            others = [r for r in rows if r.get("name") == model]
            versions = [(model, str(r.get("version", "-")), _not_ready(r)) for r in others]
        chosen.extend(versions or [(model, "-", "not in the repository index")])
    return chosen


def _not_ready(row: dict[str, Any]) -> str:
    reason = f": {row['reason']}" if row.get("reason") else ""
    return f"not ready ({row.get('state')}{reason})"



def _loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
