"""``inferno monitor``: show a running server's drift live, and plot it.

Every feature of a drift document has a ``score`` and a ``threshold``, higher = more drift,
so ``score / threshold`` puts features measured by different tests on one scale: above 1.0
the feature has drifted. The polling (and the monitor's settings) are in
:mod:`inferno.monitoring.poller`.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from inferno.monitoring.poller import (
    Document,
    Drift,
    Poller,
    Snapshot,
    WatchConfig,
    make_config,
    select,
)

__all__ = [  # Poller, make_config, select, Drift, Snapshot: the poller's, for those importing them from here
    "MAX_POLLS", "Drift", "History", "Poller", "Snapshot", "WatchConfig", "drift_spans", "make_config",
    "plot", "ratio", "select", "table", "validation_line", "verdict", "view", "watch",
]

log = logging.getLogger(__name__)

MAX_POLLS = 10_000
"""Points kept per series in a ``History``: 10,000 polls is 5.5 hours at the default 2 s."""


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
