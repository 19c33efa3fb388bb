"""The gRPC side of the load generator against a fake Triton gRPC service on loopback."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from inferno.bench import BenchConfig, run_bench
from inferno.errors import MissingExtraError, UnknownModelError, UserInputError

grpc = pytest.importorskip("grpc")
service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")
service_pb2_grpc = pytest.importorskip("tritonclient.grpc.service_pb2_grpc")


@dataclass
class Seen:
    fail_every: int = 0
    delay_s: float = 0.0
    token: str | None = None
    count: int = 0
    requests: list[Any] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class FakeService(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(self, seen: Seen) -> None:
        self.seen = seen

    def _authorize(self, context: Any) -> None:
        if self.seen.token is None:
            return
        metadata = dict(context.invocation_metadata())
        if metadata.get("authorization") != f"Bearer {self.seen.token}":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing token")

    def ModelMetadata(self, request: Any, context: Any) -> Any:
        self._authorize(context)
        if request.name != "fake":
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {request.name!r}")
        meta = service_pb2.ModelMetadataResponse.TensorMetadata
        return service_pb2.ModelMetadataResponse(
            name="fake", versions=["1"], platform="test",
            inputs=[meta(name="x", datatype="FP32", shape=[-1, 4]),
                    meta(name="t", datatype="BYTES", shape=[-1])],
            outputs=[meta(name="y", datatype="FP32", shape=[-1, 4])])  # fmt: skip

    def ModelInfer(self, request: Any, context: Any) -> Any:
        self._authorize(context)
        if self.seen.delay_s:
            time.sleep(self.seen.delay_s)
        with self.seen.lock:
            self.seen.count += 1
            count = self.seen.count
            if len(self.seen.requests) < 3:
                self.seen.requests.append(request)
        if self.seen.fail_every and count % self.seen.fail_every == 0:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"queue full #{count}")
        return service_pb2.ModelInferResponse(model_name="fake", model_version="1")


@pytest.fixture
def fake_grpc() -> Iterator[tuple[str, Seen]]:
    seen = Seen()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(FakeService(seen), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"grpc://127.0.0.1:{port}", seen
    finally:
        server.stop(grace=None).wait(5)


def _config(url: str, **fields: Any) -> BenchConfig:
    return BenchConfig(**{"model": "fake", "url": url, "duration_s": 0.5, "warmup_s": 0, **fields})


def test_closed_and_open_loop_count_what_the_server_saw(fake_grpc: tuple[str, Seen]) -> None:
    url, seen = fake_grpc
    report = run_bench(_config(url, concurrency=(4,), rates=(300.0,), max_requests=30,
                               duration_s=20, version="1", batch=2))  # fmt: skip
    assert report.protocol == "grpc" and report.url == url and report.transport == "gRPC"
    assert [(p.mode, p.requests, p.errors) for p in report.points] == [
        ("concurrency", 30, 0), ("rate", 30, 0)]  # fmt: skip
    assert seen.count == 60
    request = seen.requests[0]
    assert request.model_name == "fake" and request.model_version == "1"
    assert [(t.name, t.datatype, list(t.shape)) for t in request.inputs] == [
        ("x", "FP32", [2, 4]), ("t", "BYTES", [2])]  # fmt: skip
    x = np.frombuffer(request.raw_input_contents[0], "<f4")
    assert x.size == 8 and np.isfinite(x).all()
    first = request.raw_input_contents[1]
    length = int.from_bytes(first[:4], "little")
    assert first[4 : 4 + length].decode()  # a sentence, length-prefixed


def test_status_codes_are_the_error_kinds(fake_grpc: tuple[str, Seen]) -> None:
    url, seen = fake_grpc
    seen.fail_every = 3
    report = run_bench(_config(url, concurrency=(2,), max_requests=30, duration_s=20))
    (point,) = report.points
    assert point.requests == 30 and point.errors == 10
    assert point.error_kinds == {"gRPC UNAVAILABLE": 10}
    assert point.error_examples["gRPC UNAVAILABLE"][0].startswith("queue full #")


def test_the_token_travels_as_metadata(fake_grpc: tuple[str, Seen]) -> None:
    url, seen = fake_grpc
    seen.token = "s3cret"
    with pytest.raises(
        UserInputError, match=r"gRPC UNAUTHENTICATED: missing token\); pass .* --token"
    ):
        run_bench(_config(url, concurrency=(1,)))
    report = run_bench(_config(url, concurrency=(1,), max_requests=5, token="s3cret"))
    assert report.points[0].errors == 0 and seen.count == 5


def test_unknown_model_and_unreachable_port(fake_grpc: tuple[str, Seen]) -> None:
    url, _ = fake_grpc
    with pytest.raises(
        UnknownModelError, match=r"model 'nope' is not served at grpc://.*NOT_FOUND"
    ):
        run_bench(_config(url, model="nope"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(UserInputError) as info:
        run_bench(_config(f"http://127.0.0.1:{port + 0}", protocol="grpc", grpc_port=port))
    assert str(info.value).startswith(f"cannot reach grpc://127.0.0.1:{port}: connection refused")


def test_a_timeout_is_deadline_exceeded(fake_grpc: tuple[str, Seen]) -> None:
    url, seen = fake_grpc
    seen.delay_s = 0.5
    report = run_bench(_config(url, concurrency=(2,), max_requests=4, timeout_s=0.1, duration_s=5))
    (point,) = report.points
    assert point.errors == point.requests == 4
    assert set(point.error_kinds) == {"gRPC DEADLINE_EXCEEDED"}


def test_without_the_grpc_extra_it_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "grpc", None)  # `import grpc` now raises ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'inferno\[grpc\]'"):
        run_bench(BenchConfig(model="m", protocol="grpc"))


def test_cli_without_the_grpc_extra_is_one_line_exit_2() -> None:
    code = (
        "import sys; sys.modules['grpc'] = None\n"
        "from inferno.cli import main\n"
        "sys.argv = ['inferno', 'bench', 'digits', '--protocol', 'grpc', '--url', 'http://127.0.0.1:9']\n"
        "main()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0] == (
        "error: inferno bench --protocol grpc needs grpcio and tritonclient[grpc], which is not "
        "installed: pip install 'inferno[grpc]'"
    )
