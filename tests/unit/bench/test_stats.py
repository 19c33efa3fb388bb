import json

import numpy as np
import pytest

from inferno.bench.stats import BenchReport, Latency, LoadPoint


@pytest.mark.parametrize(
    "values",
    [
        [0.001, 0.002, 0.003, 0.004, 0.005],
        list(np.linspace(0.0005, 0.2, 1001)),
        list(np.random.default_rng(3).lognormal(-6, 1, 5000)),
        [0.0042],
    ],
)
def test_percentiles_match_numpy(values: list[float]) -> None:
    lat = Latency.of(values)
    assert lat is not None
    ms = np.asarray(values) * 1000
    expected = np.percentile(ms, [50, 90, 95, 99])
    assert [lat.p50, lat.p90, lat.p95, lat.p99] == pytest.approx(expected.tolist())
    assert lat.mean == pytest.approx(ms.mean())
    assert lat.max == pytest.approx(ms.max())
    assert lat.p50 <= lat.p90 <= lat.p95 <= lat.p99 <= lat.max


def test_known_percentiles() -> None:
    lat = Latency.of([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert lat is not None
    assert lat.p50 == pytest.approx(50.5)
    assert lat.p99 == pytest.approx(99.01)
    assert lat.max == pytest.approx(100.0)


def test_no_latency_without_successes() -> None:
    assert Latency.of([]) is None


def _point(**changes: object) -> LoadPoint:
    fields: dict[str, object] = {
        "mode": "concurrency",
        "level": 4,
        "requests": 110,
        "errors": 10,
        "duration_s": 2.0,
        "latency_ms": Latency.of([0.001] * 100),
        "error_kinds": {"HTTP 503": 10},
        "error_examples": {"HTTP 503": ("busy",)},
    }
    fields.update(changes)
    return LoadPoint(**fields)  # type: ignore[arg-type]


def test_throughput_counts_successes_only() -> None:
    point = _point()
    assert point.successes == 100
    assert point.throughput_rps == pytest.approx(50.0)
    assert point.label == "concurrency 4"
    assert _point(mode="rate", level=12.5).label == "rate 12.5/s"


def test_report_json_round_trip() -> None:
    report = BenchReport(
        url="http://127.0.0.1:8000",
        model="digits",
        version=None,
        inputs="pixels FP32 [-1, 1, 28, 28]",
        batch=1,
        warmup_s=0.5,
        points=(_point(), _point(mode="rate", level=50.0, latency_ms=None, offered_rps=49.0)),
    )
    data = json.loads(report.to_json())
    assert data["model"] == "digits"
    first, second = data["points"]
    assert first["level"] == 4 and isinstance(first["level"], int)
    assert first["throughput_rps"] == pytest.approx(50.0)
    assert first["latency_ms"]["p50"] == pytest.approx(1.0)
    assert first["error_examples"] == {"HTTP 503": ["busy"]}
    assert second["latency_ms"] is None and second["offered_rps"] == 49.0
    assert report.errors == 20


def test_merge_adds_up_the_processes_of_a_point() -> None:
    from inferno.bench.load import Outcome, merge

    first = Outcome(np.full(90, 0.001), {"HTTP 503": 10}, {"HTTP 503": ["busy", "full"]}, 2.0,
                    sent=100, cpu_share=0.3)  # fmt: skip
    second = Outcome(np.full(50, 0.003), {"HTTP 503": 5, "timeout": 1},
                     {"HTTP 503": ["busy", "gone", "more"], "timeout": ["late"]}, 2.5,
                     sent=56, cpu_share=0.6)  # fmt: skip
    point = merge("rate", 60.0, [first, second])
    assert point.requests == 90 + 50 + 16 and point.errors == 16
    assert point.error_kinds == {"HTTP 503": 15, "timeout": 1}
    assert point.error_examples == {"HTTP 503": ("busy", "full", "gone"), "timeout": ("late",)}
    assert point.duration_s == 2.5 and point.offered_rps == pytest.approx(156 / 2.5)
    assert point.clients == 2 and point.client_cpu == 0.6
    assert point.latency_ms is not None and point.latency_ms.max == pytest.approx(3.0)
    assert merge("concurrency", 4, [first]).offered_rps is None
