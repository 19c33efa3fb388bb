"""``inferno monitor``: poll a running server's drift endpoint, show it live, plot it.

The server's side: ``POST /v2/repository/index`` (Triton's repository index) lists the
models, and ``GET /v2/models/{model}/versions/{version}/drift`` answers one drift document
per model version (404 when the version has no reference profile). Every feature has a
``score`` and a ``threshold``, higher = more drift, so ``score / threshold`` puts features
measured by different tests on one scale: above 1.0 the feature has drifted.

Only the given URL is contacted: no proxies, no redirects followed.
"""

from __future__ import annotations

import http.client
import logging
import math
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from rich.console import Console, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from inferno.bench.config import DEFAULT_URL, check_url
from inferno.bench.metadata import error_text
from inferno.errors import ConfigError, UserInputError

log = logging.getLogger(__name__)

TIMEOUT_S = 5.0
"""Per-request timeout; a server slower than this counts as unreachable for that poll."""
MAX_POLLS = 10_000
"""Points kept per series in a ``History``: 10,000 polls is 5.5 hours at the default 2 s."""

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


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx is answered as an error: nothing but the given URL is contacted


class Poller:
    """A synchronous client of one server's repository index and drift endpoints."""

    def __init__(self, url: str, token: str | None = None, timeout_s: float = TIMEOUT_S) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        # ProxyHandler({}): no *_proxy variable can route the requests elsewhere.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())

    def _request(self, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """Send one request; returns (status, body) for any HTTP answer.

        Raises:
            UserInputError: the server cannot be reached or does not answer in time.
        """
        method = "GET" if body is None else "POST"
        request = urllib.request.Request(self.url + path, body, self._headers, method=method)
        try:
            with self._opener.open(request, timeout=self.timeout_s) as resp:
                return int(resp.status), resp.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read()
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            raise UserInputError(unreachable(self.url, exc, self.timeout_s)) from exc

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


def unreachable(url: str, exc: BaseException, timeout_s: float) -> str:
    """The one line for a server that does not answer: ``cannot reach URL: why — hint``."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, ConnectionRefusedError):
        why = "connection refused"
    elif isinstance(reason, TimeoutError):
        why = f"no answer in {timeout_s:g} s"
    elif isinstance(reason, OSError) and reason.strerror:
        why = reason.strerror.lower()
    else:
        why = str(reason) or type(reason).__name__
    return f"cannot reach {url}: {why} — is `inferno serve` running?"


def _loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


# -- the table ---------------------------------------------------------------------------------

FEATURE_COLUMNS = ("feature", "method", "score", "threshold", "score/threshold", "drifted")


def table(
    entries: Sequence[Drift], *, title: str | None = None, caption: str | Text | None = None
) -> Table:
    """One block per model version: its verdict and window, then one row per feature."""
    result = Table.grid()
    result.title, result.caption = title, caption
    result.title_justify = result.caption_justify = "left"
    for i, entry in enumerate(entries):
        if i:
            result.add_row("")
        for part in _block(entry):
            result.add_row(part)
    if not entries:
        result.add_row(Text("no READY model on the server", style="yellow"))
    return result


def _block(entry: Drift) -> list[RenderableType]:
    name = f"{entry.model} v{entry.version}"
    doc = entry.document
    if doc is None:
        style = "dim" if (entry.problem or "").startswith("no profile") else "yellow"
        return [Text.assemble((name, "bold"), ": ", (entry.problem or "no document", style))]
    head = Text.assemble(
        (name, "bold"),
        "  ",
        verdict(doc),
        f"  share {_num(doc.get('share'), '.2f')} (drift at ≥ {_num(doc.get('drift_share'), '.2f')})"
        f"  window {_num(doc.get('window_filled'), ',')}/{_num(doc.get('window_size'), ',')}"
        f"  observed {_num(doc.get('observed_rows'), ',')} rows"
        f"  since {_when(doc.get('since'))}",
    )
    features = Table()
    for column in FEATURE_COLUMNS:
        features.add_column(
            column, justify="left" if column in ("feature", "method", "drifted") else "right"
        )
    for feature in doc.get("features") or []:
        if isinstance(feature, dict):
            features.add_row(*_feature_row(feature))
    line = validation_line(doc)
    parts: list[RenderableType] = [head, features]
    if line:
        parts.append(Text(line, style="dim"))
    return parts


def verdict(doc: Document) -> Text:
    """DRIFT (red), ok (green), or ``no check yet`` before the window first fills."""
    if doc.get("checked_at") is None:
        return Text("no check yet", style="yellow")
    return Text("DRIFT", style="bold red") if doc.get("drifted") else Text("ok", style="green")


def ratio(feature: dict[str, Any]) -> float | None:
    """``score / threshold``: above 1.0 the feature has drifted; None without a score yet."""
    score, threshold = _number(feature.get("score")), _number(feature.get("threshold"))
    if score is None or threshold is None or threshold <= 0:
        return None
    return score / threshold


def _feature_row(feature: dict[str, Any]) -> list[str | Text]:
    r = ratio(feature)
    drifted = bool(feature.get("drifted"))
    if feature.get("score") is None:
        marker = Text("waiting", style="dim")
    else:
        marker = Text("DRIFT", style="bold red") if drifted else Text("ok", style="green")
    return [
        str(feature.get("name", "?")),
        str(feature.get("method", "?")),
        _num(feature.get("score"), ".4g"),
        _num(feature.get("threshold"), ".4g"),
        Text(_num(r, ".2f"), style="red" if r is not None and r > 1 else ""),
        marker,
    ]


def validation_line(doc: Document) -> str | None:
    """``validation (count): pixels: 3 out_of_range`` — non-zero failure counts only."""
    validation = doc.get("validation")
    if not isinstance(validation, dict):
        return None
    failures = validation.get("failures")
    parts = []
    for name, counts in (failures if isinstance(failures, dict) else {}).items():
        if isinstance(counts, dict):
            found = [f"{n:,} {kind}" for kind, n in counts.items() if _number(n)]
            if found:
                parts.append(f"{name}: {', '.join(found)}")
    return f"validation ({validation.get('mode', '?')}): " + ("; ".join(parts) or "no failures")


def _number(value: Any) -> float | None:
    """A finite JSON number (not a bool) as a float, else None."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _num(value: Any, spec: str) -> str:
    return "-" if _number(value) is None else format(value, spec)


def _when(stamp: Any) -> str:
    if not isinstance(stamp, str):
        return "-"
    try:
        return f"{datetime.fromisoformat(stamp):%Y-%m-%d %H:%M:%S %Z}".strip()
    except ValueError:
        return stamp


# -- history and plot --------------------------------------------------------------------------


class History:
    """Score/threshold of every feature and the verdict of every model version, per poll.

    Each series keeps its last ``max_polls`` points, so a watch of any length has bounded memory.
    """

    def __init__(self, max_polls: int = MAX_POLLS) -> None:
        if max_polls < 1:
            raise ValueError(f"max_polls: expected at least 1, got {max_polls}")
        self.max_polls = max_polls
        self.start: float | None = None
        self._verdicts: dict[tuple[str, str], deque[tuple[float, bool]]] = {}
        self._ratios: dict[tuple[str, str], dict[str, deque[tuple[float, float | None]]]] = {}

    def record(self, snapshot: Snapshot) -> None:
        """Add the documents of one poll (a poll with none adds nothing)."""
        for entry in snapshot.entries:
            if entry.document is None:
                continue
            if self.start is None:
                self.start = snapshot.at
            key = (entry.model, entry.version)
            self._verdicts.setdefault(key, deque(maxlen=self.max_polls)).append(
                (snapshot.at, bool(entry.document.get("drifted")))
            )
            features = self._ratios.setdefault(key, {})
            for feature in entry.document.get("features") or []:
                if isinstance(feature, dict):
                    name = str(feature.get("name", "?"))
                    features.setdefault(name, deque(maxlen=self.max_polls)).append(
                        (snapshot.at, ratio(feature))
                    )

    def versions(self) -> list[tuple[str, str]]:
        """Every ``(model, version)`` recorded, in the order first seen."""
        return list(self._verdicts)

    def verdicts(self, model: str, version: str) -> list[tuple[float, bool]]:
        """``(time, drifted)`` per poll of one model version."""
        return list(self._verdicts.get((model, version), ()))

    def ratios(self, model: str, version: str) -> dict[str, list[tuple[float, float | None]]]:
        """``feature → [(time, score/threshold or None)]`` of one model version."""
        return {
            name: list(points) for name, points in self._ratios.get((model, version), {}).items()
        }


def drift_spans(verdicts: Sequence[tuple[float, bool]]) -> list[tuple[float, float]]:
    """``(start, end)`` of each run of drifted polls; a run ends at the next poll's time."""
    spans: list[tuple[float, float]] = []
    start: float | None = None
    for at, drifted in verdicts:
        if drifted and start is None:
            start = at
        elif not drifted and start is not None:
            spans.append((start, at))
            start = None
    if start is not None:
        spans.append((start, verdicts[-1][0]))
    return spans


LEGEND_FEATURES = 10
"""Features named in a subplot's legend (the highest peaks); the rest are drawn in grey."""


def plot(history: History, path: Path) -> None:
    """Score/threshold over elapsed seconds: a subplot per model version, a line per feature.

    The dashed line at 1.0 is the threshold; red spans are polls where the verdict was drift.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = history.versions()
    fig, axes = plt.subplots(
        max(1, len(keys)), 1, figsize=(9, 0.8 + 3 * max(1, len(keys))), sharex=True, squeeze=False
    )
    start = history.start or 0.0
    for ax, (model, version) in zip(axes[:, 0], keys, strict=False):
        series = history.ratios(model, version)
        peaks = {
            n: max((r for _, r in pts if r is not None), default=0.0) for n, pts in series.items()
        }
        named = set(sorted(peaks, key=lambda n: -peaks[n])[:LEGEND_FEATURES])
        for name, points in series.items():
            x = [at - start for at, _ in points]
            y = [math.nan if r is None else r for _, r in points]
            if name in named:
                ax.plot(x, y, marker="." if len(x) < 50 else None, linewidth=1.4, label=name)
            else:
                ax.plot(x, y, color="grey", linewidth=0.6, alpha=0.5)
        ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="threshold")
        label: str | None = "verdict: drift"
        for lo, hi in drift_spans(history.verdicts(model, version)):
            if hi > lo:
                ax.axvspan(lo - start, hi - start, color="tab:red", alpha=0.15, label=label)
            else:  # one drifted poll at the very end
                ax.axvline(lo - start, color="tab:red", alpha=0.4, label=label)
            label = None
        ax.set_title(f"{model} v{version}: score / threshold")
        ax.set_ylabel("score / threshold")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    if not keys:
        axes[0, 0].text(0.5, 0.5, "no drift document was recorded", ha="center", va="center")
        axes[0, 0].set_axis_off()
    axes[-1, 0].set_xlabel("elapsed seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- the live view -----------------------------------------------------------------------------


def view(config: WatchConfig, snapshot: Snapshot, shown: Sequence[Drift]) -> Table:
    """The live table: the last answered poll, captioned with this poll's time or failure."""
    when = time.strftime("%H:%M:%S", time.localtime(snapshot.wall))
    caption: Text | str
    if snapshot.error is not None:
        caption = Text(f"unreachable at {when}: {snapshot.error} (still polling)", style="red")
    else:
        caption = f"polled at {when}, every {config.interval_s:g} s; Ctrl-C to stop"
    return table(shown, title=f"inferno monitor: drift at {config.url}", caption=caption)


def watch(
    poller: Poller, config: WatchConfig, history: History, console: Console
) -> Snapshot | None:
    """Poll every ``interval_s`` until ``duration_s`` or Ctrl-C, showing the table live.

    Each poll is recorded in ``history``. Ctrl-C ends the watch normally. An unreachable
    server is shown in the caption and polled again. Returns the last poll (None if interrupted
    before the first).
    """
    started = time.monotonic()
    deadline = math.inf if config.duration_s is None else started + config.duration_s
    last: Snapshot | None = None
    shown: tuple[Drift, ...] = ()
    tick = 0
    with Live(console=console, auto_refresh=False, transient=False) as live:
        try:
            while True:
                last = poller.poll(config.models)
                history.record(last)
                if last.error is None:
                    shown = last.entries
                live.update(view(config, last, shown), refresh=True)
                # skip the ticks a slow poll missed instead of polling in a burst to catch up
                tick = max(tick + 1, int((time.monotonic() - started) / config.interval_s) + 1)
                wake = started + tick * config.interval_s
                if wake > deadline:
                    break
                time.sleep(max(0.0, wake - time.monotonic()))
        except KeyboardInterrupt:
            log.debug("watch of %s stopped by Ctrl-C", config.url)
    return last
