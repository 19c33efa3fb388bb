from pathlib import Path

from rich.console import Console

from inferno.bench.render import COLUMNS, notes, plot, row, table
from inferno.bench.stats import BenchReport, Latency, LoadPoint


def _report() -> BenchReport:
    ok = LoadPoint("concurrency", 4, 100, 0, 1.0, Latency.of([0.002] * 100))
    failing = LoadPoint(
        "rate",
        50.0,
        40,
        40,
        1.0,
        None,
        offered_rps=20.0,
        error_kinds={"HTTP 503": 30, "timeout": 10},
        error_examples={"HTTP 503": ("queue full",)},
    )
    slow = LoadPoint("rate", 20.0, 20, 0, 1.0, Latency.of([0.01, 0.02]), offered_rps=20.0)
    return BenchReport(
        "http://127.0.0.1:8000", "digits", "1", "pixels FP32", 1, 0.5, (ok, failing, slow)
    )


def test_rows_and_table() -> None:
    report = _report()
    assert row(report.points[0]) == ["concurrency 4", "100", "0", "100", *["2.00"] * 5]
    assert row(report.points[1])[0] == "rate 50/s (sent 20/s)"
    assert row(report.points[1])[4:] == ["-"] * 5
    console = Console(record=True, width=160)
    console.print(table(report))
    text = console.export_text()
    assert "digits v1" in text and "pixels FP32" in text
    assert all(column in text for column in COLUMNS)


def test_notes_list_errors_and_a_slow_generator() -> None:
    lines = notes(_report())
    assert lines[0] == "rate 50/s: 30 × HTTP 503 — queue full"
    assert lines[1] == "rate 50/s: 10 × timeout"
    assert "generator sent only 20/s" in lines[2]
    assert len(lines) == 3


def test_plot_writes_a_png(tmp_path: Path) -> None:
    path = tmp_path / "bench.png"
    plot(_report(), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_title_names_the_transport_and_a_busy_generator_is_noted() -> None:
    busy = LoadPoint(
        "concurrency", 64, 100, 0, 1.0, Latency.of([0.002]), clients=2, client_cpu=0.97
    )
    idle = LoadPoint("concurrency", 1, 100, 0, 1.0, Latency.of([0.002]), client_cpu=0.2)
    report = BenchReport("grpc://127.0.0.1:8001", "digits", None, "pixels FP32", 1, 0.5,
                         (busy, idle), protocol="grpc")  # fmt: skip
    console = Console(record=True, width=160)
    console.print(table(report))
    assert "digits at grpc://127.0.0.1:8001 (gRPC)" in console.export_text()
    assert notes(report) == [
        "concurrency 64: the load generator was busy 97% of the time (the busiest of 2 "
        "processes): it may have limited this point; give it more cores or --clients"
    ]
    binary = BenchReport("http://h:1", "m", None, "x", 1, 0.5, (idle,), binary=True)
    assert binary.transport == "HTTP binary" and _report().transport == "HTTP JSON"
