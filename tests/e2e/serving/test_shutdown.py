"""`inferno serve` as a process: SIGTERM/SIGINT let queued requests finish, then exit 0."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from .support import Response, digits_json_body, parse_metrics, raw_request

pytestmark = pytest.mark.slow

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_ready(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"inferno serve exited with {proc.returncode} before it was ready:\n{log.read_text()}")
        try:
            if raw_request(HOST, port, "GET", "/v2/health/ready", timeout=2).status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail(f"inferno serve was not ready within {timeout:.0f} s:\n{log.read_text()}")


def queue_depth(port: int) -> float:
    metrics = parse_metrics(raw_request(HOST, port, "GET", "/metrics", timeout=5).text)
    return metrics.get('inferno_queue_depth{model="digits",version="1"}', 0.0)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_drains_queued_requests_and_exits_0(model_repository: Path, tmp_path: Path,
                                                   sig: signal.Signals) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "inferno", "serve", str(model_repository), "--model", "digits",
             "--port", str(port), "--max-queue-delay-us", "2000000"],
            stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path,
        )
    try:
        wait_ready(port, proc, log)
        n = 4
        answers: dict[int, tuple[Response, float]] = {}
        errors: list[BaseException] = []

        def send(i: int) -> None:
            try:
                response = raw_request(HOST, port, "POST", "/v2/models/digits/infer", digits_json_body(1, seed=i))
                answers[i] = (response, time.monotonic())
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        # every request waits in the queue: the first of a batch waits 2 s for others to join it
        deadline = time.monotonic() + 1.5
        while queue_depth(port) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        assert queue_depth(port) == n
        signalled = time.monotonic()
        proc.send_signal(sig)
        for t in threads:
            t.join(timeout=30)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = log.read_text()
    assert not errors, (errors, output)
    assert code == 0, output
    assert sorted(answers) == list(range(n))
    for response, received in answers.values():
        assert response.status == 200, (response.body, output)
        assert response.json()["outputs"][0]["shape"] == [1, 10]
        assert received > signalled  # answered after the signal: drained, not served before it
    assert "Traceback" not in output, output
    with pytest.raises(OSError):
        raw_request(HOST, port, "GET", "/v2/health/live", timeout=2)
