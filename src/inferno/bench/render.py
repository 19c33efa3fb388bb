"""Human views of a ``BenchReport``: a rich table, error notes, a live progress bar, a plot."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from inferno.bench.stats import BenchReport, LoadPoint

COLUMNS = ("load", "requests", "errors", "req/s", "p50 ms", "p90 ms", "p95 ms", "p99 ms", "max ms")


def row(point: LoadPoint) -> list[str]:
    """One table row; latencies are "-" when no request succeeded."""
    load = point.label
    if point.offered_rps is not None and point.offered_rps < 0.95 * point.level:
        load += f" (sent {point.offered_rps:,.0f}/s)"
    lat = point.latency_ms
    cells = (
        [f"{v:.2f}" for v in (lat.p50, lat.p90, lat.p95, lat.p99, lat.max)] if lat else ["-"] * 5
    )
    return [
        load,
        f"{point.requests:,}",
        f"{point.errors:,}",
        f"{point.throughput_rps:,.0f}",
        *cells,
    ]


def table(report: BenchReport) -> Table:
    """The points of a run, one row each."""
    version = f" v{report.version}" if report.version else ""
    result = Table(
        title=f"inferno bench: {report.model}{version} at {report.url} ({report.transport})",
        caption=report.inputs,
    )
    for column in COLUMNS:
        result.add_column(column, justify="left" if column == "load" else "right")
    for point in report.points:
        result.add_row(*row(point))
    return result


def notes(report: BenchReport) -> list[str]:
    """One line per error kind per point, with example messages; and generator warnings."""
    lines = []
    for point in report.points:
        for kind, count in sorted(point.error_kinds.items(), key=lambda kv: -kv[1]):
            examples = " | ".join(point.error_examples.get(kind, ()))
            lines.append(
                f"{point.label}: {count:,} × {kind}" + (f" — {examples}" if examples else "")
            )
        if point.offered_rps is not None and point.offered_rps < 0.95 * point.level:
            lines.append(
                f"{point.label}: the generator sent only {point.offered_rps:,.0f}/s; "
                "give it a core of its own or lower the rate"
            )
        if point.client_saturated and point.client_cpu is not None:
            processes = (
                "its process" if point.clients == 1 else f"the busiest of {point.clients} processes"
            )
            lines.append(
                f"{point.label}: the load generator was busy {point.client_cpu:.0%} of the time "
                f"({processes}): it may have limited this point; give it more cores or --clients"
            )
    return lines


@contextmanager
def progress_bar(console: Console) -> Iterator[Callable[[str, float], None]]:
    """A transient bar on ``console``; yields the ``progress`` callback of ``run_bench``."""
    bar = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    with bar:
        task_id = bar.add_task("connecting", total=1.0)

        def update(description: str, fraction: float) -> None:
            bar.update(task_id, description=description, completed=fraction)

        yield update


def plot(report: BenchReport, path: Path) -> None:
    """Latency (p50 solid, p99 dashed) against throughput, one colour per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, ax = plt.subplots(figsize=(8, 5))
    for mode, color in (("concurrency", "tab:blue"), ("rate", "tab:orange")):
        points = [p for p in report.points if p.mode == mode and p.latency_ms is not None]
        if not points:
            continue
        points.sort(key=lambda p: p.level)
        x = [p.throughput_rps for p in points]
        p50 = [p.latency_ms.p50 for p in points if p.latency_ms]
        p99 = [p.latency_ms.p99 for p in points if p.latency_ms]
        name = "closed loop" if mode == "concurrency" else "open loop"
        ax.plot(x, p50, "o-", color=color, label=f"{name} p50")
        ax.plot(x, p99, "s--", color=color, label=f"{name} p99")
        for point, y in zip(points, p99, strict=True):
            level = f"c={int(point.level)}" if mode == "concurrency" else f"{point.level:g}/s"
            ax.annotate(
                level,
                (point.throughput_rps, y),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    ax.set_xlabel("throughput (successful requests/s)")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    plain = FuncFormatter(lambda value, _pos: f"{value:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.set_title(
        f"{report.model}: latency against throughput ({report.transport}, batch {report.batch})"
    )
    ax.grid(alpha=0.3, which="both")
    if ax.lines:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
