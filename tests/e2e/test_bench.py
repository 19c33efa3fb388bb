"""``inferno bench`` end to end: the CLI against a real inferno server on loopback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

SHORT = ("--duration", "1", "--warmup", "0.3")


def bench(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inferno", "bench", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A digits model repository (fp32 on ONNX Runtime), served on 127.0.0.1."""
    import inferno
    from inferno.serving.config import ServeConfig
    from inferno.serving.server import ServerThread

    repo = tmp_path_factory.mktemp("bench") / "model_repository"
    inferno.accelerate(
        "digits", repository=repo, variants=("fp32",), runtimes=("onnxruntime",), repeats=3
    )
    with ServerThread(ServeConfig(repository=repo, port=0)) as url:
        yield url


def _check_point(point: dict[str, object]) -> None:
    assert isinstance(point["requests"], int) and point["requests"] > 0
    assert point["errors"] == 0 and point["error_kinds"] == {}
    lat = point["latency_ms"]
    assert isinstance(lat, dict)
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert isinstance(point["throughput_rps"], float) and point["throughput_rps"] > 0


@pytest.mark.slow
def test_concurrency_sweep_json(server: str, tmp_path: Path) -> None:
    result = bench(
        "digits", "--url", server, "--concurrency", "1,4", *SHORT, "--json", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["model"] == "digits" and report["url"] == server
    assert "pixels FP32" in report["inputs"]
    assert [(p["mode"], p["level"]) for p in report["points"]] == [
        ("concurrency", 1),
        ("concurrency", 4),
    ]
    for point in report["points"]:
        _check_point(point)


@pytest.mark.slow
def test_rate_and_max_requests(server: str, tmp_path: Path) -> None:
    result = bench(
        "digits", "--url", server, "--concurrency", "2", "--rate", "40",
        "--max-requests", "30", "--duration", "5", "--warmup", "0.3", "--json",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    closed, opened = json.loads(result.stdout)["points"]
    assert (closed["mode"], closed["level"]) == ("concurrency", 2)
    assert (opened["mode"], opened["level"]) == ("rate", 40.0)
    assert closed["requests"] == 30 and opened["requests"] == 30
    assert opened["duration_s"] < 5
    for point in (closed, opened):
        _check_point(point)


@pytest.mark.slow
def test_table_and_plot(server: str, tmp_path: Path) -> None:
    plot = tmp_path / "latency.png"
    result = bench("digits", "--url", server, "--concurrency", "2", *SHORT, "--plot", str(plot),
                   cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "concurrency 2" in result.stdout and "p99 ms" in result.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_python_api_with_evaluation_data(server: str, tmp_path: Path) -> None:
    from inferno.bench import BenchConfig, run_bench

    data = tmp_path / "digits.npz"
    rng = np.random.default_rng(0)
    np.savez(data, pixels=rng.uniform(0, 16, (40, 1, 8, 8)).astype(np.float32), labels=np.zeros(40))
    config = BenchConfig(
        model="digits", url=server, version="1", concurrency=(4,), batch=8, data=data,
        duration_s=1.0, warmup_s=0.3,
    )  # fmt: skip
    report = run_bench(config)
    (point,) = report.points
    assert point.requests > 0 and point.errors == 0
    assert "digits.npz (40 samples)" in report.inputs and "batch 8" in report.inputs


@pytest.mark.slow
def test_unknown_model_exits_2(server: str, tmp_path: Path) -> None:
    result = bench("no-such-model", "--url", server, *SHORT, cwd=tmp_path)
    assert_one_line_error(result, "'no-such-model' is not served")


def test_unreachable_url_exits_2(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a free port: nothing listens there
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    result = bench("digits", "--url", url, *SHORT, cwd=tmp_path)
    assert_one_line_error(result, f"cannot reach {url}: connection refused")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--concurrency", "1,x"), "--concurrency"),
        (("--rate", "-5"), "--rate"),
        (("--duration", "0"), "--duration"),
        (("--url", "http://127.0.0.1:8000/v2"), "--url"),
        (("--plot", "/no/such/dir/p.png"), "--plot"),
    ],
)
def test_bad_options_exit_2(args: tuple[str, ...], fragment: str, tmp_path: Path) -> None:
    assert_one_line_error(bench("digits", *args, cwd=tmp_path), fragment)
