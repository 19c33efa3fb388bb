"""How ``inferno bench --profile`` shows its results: a table, notes and JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence

from rich.table import Table

from inferno.edge.profiles import ProfileResult

COLUMNS = ("profile", "threads", "memory cap", "mechanism", "fits", "p50 ms", "p90 ms", "throughput/s",
           "peak RSS MB", "load ms")


def _number(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def row(result: ProfileResult) -> tuple[str, ...]:
    """One table row: the profile, the limits applied, the verdict and the figures."""
    limits = result.limits
    cap = f"{result.profile.memory_mb:,} MB" if result.profile.memory_mb is not None else "none"
    if limits.cpu_mechanism == "affinity":
        cpu = f"affinity {len(limits.cpus or ())} core(s)"
    else:
        cpu = f"cpu.max {limits.cpu_quota or 0:g}" if limits.cpu_mechanism == "cgroup" else ""
    mechanism = " + ".join(m for m in (limits.memory_mechanism if limits.memory_mechanism != "none" else "", cpu) if m)
    latency = result.latency_ms or {}
    return (result.profile.name, str(result.profile.threads), cap, mechanism or "none",
            "yes" if result.fits else "[bold red]no[/]", _number(latency.get("p50"), 3),
            _number(latency.get("p90"), 3), _number(result.throughput, 1), _number(result.peak_rss_mb, 1),
            _number(result.load_ms, 1))


def table(results: Sequence[ProfileResult]) -> Table:
    """One row per profile, titled with the model and the batch size."""
    first = results[0]
    grid = Table(title=f"inferno bench --profile: {first.model}, batch {first.batch}",
                 caption=f"inputs: {first.inputs}" if first.inputs else None)
    for column in COLUMNS:
        grid.add_column(column, justify="left" if column in ("profile", "mechanism") else "right")
    for result in results:
        grid.add_row(*row(result))
    return grid


def notes(results: Sequence[ProfileResult]) -> list[str]:
    """The verdict of each profile that does not fit, then each distinct note once."""
    lines = [f"{r.model}: {r.reason}" for r in results if not r.fits and r.reason]
    seen: set[str] = set()
    for result in results:
        for note in result.notes:
            if note not in seen:
                seen.add(note)
                lines.append(f"note: {note}")
    return lines


def to_json(results: Sequence[ProfileResult]) -> str:
    """``{"results": [...]}``: every field of every result."""
    return json.dumps({"results": [r.to_dict() for r in results]}, indent=2)
