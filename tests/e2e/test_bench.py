"""``inferno bench`` end to end: the CLI against a real inferno server on loopback."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

if TYPE_CHECKING:
    from inferno.serving.server import ServerThread

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


HAS_GRPC = importlib.util.find_spec("grpc") is not None and (
    importlib.util.find_spec("tritonclient") is not None
)
needs_grpc = pytest.mark.skipif(not HAS_GRPC, reason="needs the [grpc] extra")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A digits model repository (fp32 on ONNX Runtime), served on 127.0.0.1 (HTTP, and gRPC
    when the extra is installed)."""
    import inferno
    from inferno.serving.config import ServeConfig
    from inferno.serving.server import ServerThread

    repo = tmp_path_factory.mktemp("bench") / "model_repository"
    inferno.accelerate(
        "digits", repository=repo, variants=("fp32",), runtimes=("onnxruntime",), repeats=3
    )
    thread = ServerThread(ServeConfig(repository=repo, port=0, grpc_port=0 if HAS_GRPC else None))
    with thread:
        yield thread


@pytest.fixture(scope="module")
def server(served: ServerThread) -> str:
    return served.url


@pytest.fixture(scope="module")
def grpc_url(served: ServerThread) -> str:
    return f"grpc://127.0.0.1:{served.app.grpc_port}"


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
        (("--protocol", "quic"), "--protocol: expected http or grpc, got 'quic'"),
        (("--grpc-port", "8001"), "--grpc-port 8001: only with --protocol grpc"),
        (("--clients", "0"), "--clients"),
        (("--protocol", "grpc", "--binary"), "--binary"),
    ],
)
def test_bad_options_exit_2(args: tuple[str, ...], fragment: str, tmp_path: Path) -> None:
    assert_one_line_error(bench("digits", *args, cwd=tmp_path), fragment)


def server_counts(url: str, model: str = "digits") -> tuple[int, int, int]:
    """The server's own statistics: (inference_count, success count, fail count)."""
    import urllib.request

    with urllib.request.urlopen(f"{url}/v2/models/{model}/stats", timeout=10) as reply:
        (entry,) = json.loads(reply.read())["model_stats"]
    stats = entry["inference_stats"]
    return entry["inference_count"], stats["success"]["count"], stats["fail"]["count"]


def counted(server: str, *args: str, cwd: Path) -> tuple[dict[str, Any], tuple[int, ...]]:
    """Run ``inferno bench --json`` and return its report and what the server counted meanwhile."""
    before = server_counts(server)
    result = bench("digits", *args, "--json", cwd=cwd)
    assert result.returncode == 0, result.stderr
    after = server_counts(server)
    return json.loads(result.stdout), tuple(a - b for a, b in zip(after, before, strict=True))


# No warm-up and --max-requests: every request sent is recorded, so the counts must agree.
EXACT = ("--warmup", "0", "--duration", "60", "--max-requests", "120")


@pytest.mark.slow
@needs_grpc
def test_grpc_closed_and_open_loop_count_what_the_server_counts(
    server: str, grpc_url: str, tmp_path: Path
) -> None:
    report, delta = counted(server, "--url", grpc_url, "--concurrency", "4", "--rate", "200",
                            *EXACT, cwd=tmp_path)  # fmt: skip
    assert report["url"] == grpc_url and report["protocol"] == "grpc"
    closed, opened = report["points"]
    for point in (closed, opened):
        _check_point(point)
        assert point["requests"] == 120
    assert delta == (240, 240, 0)


@pytest.mark.slow
@needs_grpc
def test_grpc_port_beside_an_http_url(served: ServerThread, tmp_path: Path) -> None:
    args = ("--protocol", "grpc", "--grpc-port", str(served.app.grpc_port), "--concurrency", "2")
    report, delta = counted(served.url, "--url", served.url, *args, *EXACT, cwd=tmp_path)
    assert report["url"] == f"grpc://127.0.0.1:{served.app.grpc_port}"
    assert report["points"][0]["requests"] == 120 and delta == (120, 120, 0)


@pytest.mark.slow
def test_binary_extension_is_answered_and_counted(server: str, tmp_path: Path) -> None:
    report, delta = counted(server, "--url", server, "--binary", "--concurrency", "4", "--batch", "3",
                            *EXACT, cwd=tmp_path)  # fmt: skip
    assert report["binary"] is True
    (point,) = report["points"]
    _check_point(point)  # every answer a 200
    assert point["requests"] == 120
    assert delta == (360, 120, 0)  # inference_count counts rows (3 per request)


@pytest.mark.slow
def test_client_processes_count_what_the_server_counts(server: str, tmp_path: Path) -> None:
    report, delta = counted(server, "--url", server, "--clients", "2", "--concurrency", "4",
                            "--rate", "200", *EXACT, cwd=tmp_path)  # fmt: skip
    for point in report["points"]:
        _check_point(point)
        assert point["requests"] == 120 and point["clients"] == 2
    assert delta == (240, 240, 0)


@pytest.mark.slow
@needs_grpc
def test_grpc_errors_are_reported_by_status_code(
    server: str, grpc_url: str, tmp_path: Path
) -> None:
    # 100 rows is over digits' max_batch_size (64): the server refuses each with INVALID_ARGUMENT.
    report, delta = counted(server, "--url", grpc_url, "--concurrency", "2", "--batch", "100",
                            "--warmup", "0", "--max-requests", "20", cwd=tmp_path)  # fmt: skip
    (point,) = report["points"]
    assert point["requests"] == point["errors"] == 20
    assert point["error_kinds"] == {"gRPC INVALID_ARGUMENT": 20}
    assert "max_batch_size" in point["error_examples"]["gRPC INVALID_ARGUMENT"][0]
    assert delta[1] == 0 and delta[2] == 20


@pytest.mark.slow
@needs_grpc
def test_grpc_table_and_errors_exit_2(server: str, grpc_url: str, tmp_path: Path) -> None:
    result = bench("digits", "--url", grpc_url, "--concurrency", "2", *SHORT, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"digits at {grpc_url} (gRPC)" in result.stdout and "p99 ms" in result.stdout
    assert_one_line_error(
        bench("no-such-model", "--url", grpc_url, *SHORT, cwd=tmp_path),
        f"model 'no-such-model' is not served at {grpc_url} (gRPC NOT_FOUND",
    )
    assert_one_line_error(
        bench("digits", "--url", grpc_url, "--binary", *SHORT, cwd=tmp_path), "--binary"
    )
