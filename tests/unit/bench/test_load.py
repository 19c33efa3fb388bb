"""The load loops against a fake server on loopback: counts, bounds, errors, stopping."""

from __future__ import annotations

import itertools

import pytest

from inferno.bench import BenchConfig, run_bench
from inferno.bench.load import poisson_arrivals
from inferno.errors import UnknownModelError, UserInputError

from .conftest import FakeServer


def _config(server: FakeServer, **fields: object) -> BenchConfig:
    settings: dict[str, object] = {
        "model": "fake",
        "url": server.url,
        "duration_s": 0.5,
        "warmup_s": 0.1,
        **fields,
    }
    return BenchConfig(**settings)  # type: ignore[arg-type]


def test_closed_loop_levels_and_percentiles(fake_server: FakeServer) -> None:
    progress: list[float] = []
    report = run_bench(
        _config(fake_server, concurrency=(1, 4)), progress=lambda _w, f: progress.append(f)
    )
    assert [(p.mode, p.level) for p in report.points] == [("concurrency", 1), ("concurrency", 4)]
    for point in report.points:
        assert point.requests > 0 and point.errors == 0 and point.error_kinds == {}
        lat = point.latency_ms
        assert lat is not None
        assert 0 < lat.p50 <= lat.p90 <= lat.p95 <= lat.p99 <= lat.max
        assert point.throughput_rps == pytest.approx(point.requests / point.duration_s)
        assert point.duration_s == pytest.approx(0.5)
    assert progress[-1] == 1.0 and all(0 <= f <= 1 for f in progress)
    assert "x FP32 [-1, 4]" in report.inputs


def test_max_requests_bounds_the_count(fake_server: FakeServer) -> None:
    report = run_bench(_config(fake_server, concurrency=(8,), duration_s=30, max_requests=25))
    (point,) = report.points
    assert point.requests == 25  # the window's length: test_load_time.py, on a virtual clock


def test_open_loop_offers_the_rate(fake_server: FakeServer) -> None:
    report = run_bench(_config(fake_server, rates=(200.0,), duration_s=1.0, seed=3))
    (point,) = report.points
    assert point.mode == "rate" and point.level == 200.0
    assert point.errors == 0
    assert 120 <= point.requests <= 280  # Poisson: about 200 ± 14 in a second
    assert point.offered_rps == pytest.approx(point.requests / point.duration_s)


def test_open_loop_max_requests(fake_server: FakeServer) -> None:
    report = run_bench(_config(fake_server, rates=(500.0,), duration_s=30, max_requests=40))
    (point,) = report.points
    assert point.requests == 40
    # the window ends at the arrival after the 40th: the schedule's, not the clock's
    measured = (t for t in poisson_arrivals(500.0, 0) if t >= 0.1)
    assert point.duration_s == pytest.approx(next(itertools.islice(measured, 40, None)) - 0.1)


def test_errors_counted_by_kind_with_examples(fake_server: FakeServer) -> None:
    fake_server.behaviour.fail_every = 3
    report = run_bench(_config(fake_server, concurrency=(2,), max_requests=60, duration_s=5))
    (point,) = report.points
    assert point.requests == 60
    assert set(point.error_kinds) == {"HTTP 503"}
    assert point.errors == point.error_kinds["HTTP 503"]
    assert 15 <= point.errors <= 25
    examples = point.error_examples["HTTP 503"]
    assert 1 <= len(examples) <= 3 and "busy" in examples[0]
    assert point.throughput_rps == pytest.approx(point.successes / point.duration_s)


def test_slow_server_times_out_and_the_run_still_ends(fake_server: FakeServer) -> None:
    fake_server.behaviour.delay_s = 2.0
    report = run_bench(  # how long the run takes: test_load_time.py, on a virtual clock
        _config(fake_server, concurrency=(2,), duration_s=1.0, warmup_s=0, timeout_s=0.2)
    )
    (point,) = report.points
    assert point.requests > 0 and point.errors == point.requests
    assert set(point.error_kinds) == {"timeout"}
    assert point.latency_ms is None
    assert point.throughput_rps == 0


def test_token_and_version_reach_the_server(fake_server: FakeServer) -> None:
    fake_server.behaviour.token = "s3cret"
    with pytest.raises(UserInputError, match="--token"):
        run_bench(_config(fake_server, concurrency=(1,)))
    report = run_bench(
        _config(fake_server, concurrency=(1,), token="s3cret", version="2", max_requests=5)
    )
    assert report.points[0].errors == 0 and report.version == "2"
    assert fake_server.behaviour.infer_paths[0] == "/v2/models/fake/versions/2/infer"


def test_unknown_model_names_it(fake_server: FakeServer) -> None:
    with pytest.raises(UnknownModelError, match="'nope' is not served"):
        run_bench(_config(fake_server, model="nope"))


def test_redirects_are_not_followed(fake_server: FakeServer) -> None:
    with pytest.raises(UserInputError, match="HTTP 307"):
        run_bench(_config(fake_server, model="moved"))


def test_unreachable_server_is_one_clear_line() -> None:
    import socket

    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(UserInputError) as info:
        run_bench(BenchConfig(model="m", url=url))
    assert str(info.value) == (
        f"cannot reach {url}: connection refused — is `inferno serve` running?"
    )


def test_open_loop_counts_requests_cut_off_at_the_end(
    fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inferno.bench import load

    monkeypatch.setattr(load, "DRAIN_S", 0.2)
    fake_server.behaviour.delay_s = 1.5
    report = run_bench(_config(fake_server, rates=(50.0,), duration_s=0.5, warmup_s=0))
    (point,) = report.points
    assert point.requests > 0 and point.errors == point.requests
    assert set(point.error_kinds) == {"unfinished"}
    assert point.offered_rps == pytest.approx(point.requests / point.duration_s)


@pytest.mark.parametrize("levels", [{"concurrency": (8,)}, {"rates": (400.0,)}])
def test_max_requests_sends_exactly_that_many(
    fake_server: FakeServer, levels: dict[str, object]
) -> None:
    # No warm-up: every request the server sees is one the report counts (none left in flight).
    report = run_bench(_config(fake_server, warmup_s=0, duration_s=30, max_requests=50, **levels))
    (point,) = report.points
    assert point.requests == 50 and point.errors == 0
    assert fake_server.behaviour.count == 50


def test_binary_extension_reaches_the_server(fake_server: FakeServer) -> None:
    from inferno.serving.protocol import parse_infer_request

    report = run_bench(_config(fake_server, concurrency=(2,), binary=True, batch=3, warmup_s=0,
                               max_requests=6, token="t"))  # fmt: skip
    assert report.points[0].errors == 0 and report.binary and report.transport == "HTTP binary"
    headers, body = fake_server.behaviour.requests[0]
    assert headers["content-type"] == "application/octet-stream"
    assert headers["authorization"] == "Bearer t"
    request = parse_infer_request(body, headers["inference-header-content-length"])
    assert request.inputs["x"].data.shape == (3, 4) and request.binary_output


def test_json_requests_carry_the_headers(fake_server: FakeServer) -> None:
    run_bench(_config(fake_server, concurrency=(1,), warmup_s=0, max_requests=2))
    headers, body = fake_server.behaviour.requests[0]
    assert headers["content-type"] == "application/json"
    assert headers["host"] == fake_server.url.removeprefix("http://")
    assert int(headers["content-length"]) == len(body) and b'"inputs"' in body


@pytest.mark.parametrize("levels", [{"concurrency": (6,)}, {"rates": (300.0,)}])
def test_client_processes_share_a_point(fake_server: FakeServer, levels: dict[str, object]) -> None:
    report = run_bench(
        _config(fake_server, clients=2, warmup_s=0, duration_s=30, max_requests=40, **levels)
    )
    (point,) = report.points
    assert point.clients == 2
    assert point.requests == 40 and point.errors == 0
    assert fake_server.behaviour.count == 40
    assert point.client_cpu is not None and point.latency_ms is not None


def test_client_processes_count_errors_by_kind(fake_server: FakeServer) -> None:
    fake_server.behaviour.fail_every = 4
    report = run_bench(
        _config(fake_server, clients=2, concurrency=(2,), warmup_s=0, max_requests=40)
    )
    (point,) = report.points
    assert point.requests == 40 and point.errors == 10  # every 4th of the 40 the server saw
    assert point.error_kinds == {"HTTP 503": 10}
    assert 1 <= len(point.error_examples["HTTP 503"]) <= 3


def test_a_busy_generator_runs_the_point_again_with_more_processes(
    fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inferno.bench import runner, stats

    monkeypatch.setattr(stats, "SATURATED", 0.0)  # every process counts as saturated
    monkeypatch.setattr(runner, "JUDGE_S", 0.0)  # however short the point
    monkeypatch.setattr(runner, "available_cpus", lambda: 2)
    report = run_bench(_config(fake_server, concurrency=(4,), warmup_s=0, max_requests=20))
    (point,) = report.points
    assert point.clients == 2 and point.requests == 20
    assert fake_server.behaviour.count == 40  # once in this process, once in two


def test_given_clients_are_kept_even_when_busy(
    fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inferno.bench import runner, stats

    monkeypatch.setattr(stats, "SATURATED", 0.0)
    monkeypatch.setattr(runner, "JUDGE_S", 0.0)
    monkeypatch.setattr(runner, "available_cpus", lambda: 2)
    report = run_bench(
        _config(fake_server, concurrency=(4,), warmup_s=0, max_requests=20, clients=1)
    )
    assert report.points[0].clients == 1 and fake_server.behaviour.count == 20
