"""The server attacked as an operator would: amplification, connection abuse, overload, aliases.

Each test here failed against the server before issue 15 and names the defect it guards.
Connection tests use real sockets on 127.0.0.1 and short server timeouts; they wait for
what the server does (a close, an answer) with bounded waits and assert on what happened,
never on how long it took.
"""

from __future__ import annotations

import gzip
import json
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import Server, assert_good_request, digits_json_body, parse_metrics, running

pytestmark = pytest.mark.slow

INFER = "/v2/models/digits/infer"


def _closed_by_server(sock: socket.socket, within_s: float = 20.0) -> bytes | None:
    """What the server sent before closing ``sock`` (b"" for nothing), or None if it stayed open."""
    sock.settimeout(0.2)
    received = b""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk
    return None


def _wait_queued(server: Server, depth: int) -> None:
    """Until the digits batcher holds ``depth`` requests (a fresh batcher waits for a full batch)."""
    batcher = server.manager.get("digits").batcher
    deadline = time.monotonic() + 20
    while batcher.queue_depth < depth:
        assert time.monotonic() < deadline, f"the queue never reached {depth} requests"
        time.sleep(0.01)


def _connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.thread.port), timeout=5)


def _http(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _answer(sock: socket.socket, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` on an open keep-alive socket and read one whole response."""
    sock.sendall(request)
    sock.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a response: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed mid-body"
        rest += chunk
    return int(status_line.split()[1]), headers, rest[:length]


# -- connections --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded(model_repository: Path) -> Iterator[Server]:
    limits = {"keep_alive_timeout_s": 0.5, "header_timeout_s": 1.0, "body_timeout_s": 1.0, "max_connections": 40}
    with running(model_repository, models=("digits",), server=limits) as server:
        yield server


def test_a_connection_that_never_sends_a_byte_is_closed_after_the_keep_alive_timeout(guarded: Server) -> None:
    sock = _connect(guarded)
    try:
        assert _closed_by_server(sock) == b"", "an idle new connection stayed open (uvicorn arms no timer for it)"
    finally:
        sock.close()


def test_a_slowloris_is_answered_408_and_closed_by_the_header_timeout(guarded: Server) -> None:
    sock = _connect(guarded)
    try:
        sock.sendall(b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\n")
        stop = time.monotonic() + 20
        sent = None
        sock.settimeout(0.3)
        while time.monotonic() < stop:  # a header line now and then, never the blank line
            try:
                sent = sock.recv(65536)
                break
            except TimeoutError:
                try:
                    sock.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    sent = b""
                    break
        assert sent is not None, "the slowloris kept its connection open"
        assert sent.startswith(b"HTTP/1.1 408"), sent
        assert b"request headers" in sent
    finally:
        sock.close()


def test_a_body_that_never_arrives_is_cut_off_by_the_body_timeout(guarded: Server) -> None:
    sock = _connect(guarded)
    try:
        sock.sendall(b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{")
        assert _closed_by_server(sock) is not None, "a stalled body kept the connection open"
    finally:
        sock.close()
    assert_good_request(guarded)


def test_a_flood_of_idle_sockets_beyond_the_cap_leaves_health_and_infer_answering(guarded: Server) -> None:
    flood = [_connect(guarded) for _ in range(120)]  # 3x the cap of 40
    try:
        for sock in flood:  # each one also sent a partial request: not even the header timeout ran out yet
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\n")
        probe = _connect(guarded)
        try:
            status, _, body = _answer(probe, _http("GET", "/v2/health/live"))
            assert status == 200 and json.loads(body) == {"live": True}
            status, _, body = _answer(probe, _http("POST", INFER, digits_json_body(1)))
            assert status == 200, body
        finally:
            probe.close()
        closed = sum(_closed_by_server(s, within_s=0.05) is not None for s in flood)
        assert closed >= 120 - 40, f"only {closed} of the 120 idle sockets were closed to keep the cap"
    finally:
        for sock in flood:
            sock.close()


def test_when_every_connection_is_busy_a_new_one_is_answered_503(model_repository: Path) -> None:
    # two connections allowed; both hold a request in flight (a batch waits 2 s to fill)
    with running(model_repository, models=("digits",), max_queue_delay_us=2_000_000, max_batch_size=8,
                 server={"max_connections": 2}) as server:
        busy = [_connect(server) for _ in range(2)]
        try:
            for sock in busy:
                sock.sendall(_http("POST", INFER, digits_json_body(1)))
            _wait_queued(server, 2)
            extra = _connect(server)
            try:
                answer = _closed_by_server(extra)
                assert answer is not None and answer.startswith(b"HTTP/1.1 503"), answer
                assert b"retry-after: 1" in answer.lower() and b"in flight" in answer
            finally:
                extra.close()
            for sock in busy:
                status, _, body = _answer(sock, b"")
                assert status == 200, body
        finally:
            for sock in busy:
                sock.close()


# -- overload -----------------------------------------------------------------------------------


@pytest.fixture
def one_slot(model_repository: Path) -> Iterator[Server]:
    with running(model_repository, models=("digits",), max_queue_size=1, max_queue_delay_us=3_000_000,
                 max_batch_size=8) as server:
        yield server


def test_a_full_queue_answers_503_before_reading_the_body(one_slot: Server) -> None:
    first, second = _connect(one_slot), _connect(one_slot)
    try:
        first.sendall(_http("POST", INFER, digits_json_body(1)))  # waits 3 s for a batch: the queue is full
        _wait_queued(one_slot, 1)
        # headers that announce a body which is never sent: only a check before the body can answer
        second.sendall(b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        status, headers, body = _answer(second, b"")
        assert status == 503, body
        assert "queue full" in json.loads(body)["error"] and headers["retry-after"] == "1"
        status, _, _ = _answer(first, b"")
        assert status == 200
    finally:
        first.close()
        second.close()
    metrics = parse_metrics(one_slot.request("GET", "/metrics").text)
    assert metrics['inferno_request_failure_total{model="digits",protocol="http",reason="rejected",version="1"}'] >= 1


# -- amplification ------------------------------------------------------------------------------


def test_a_response_over_the_budget_is_refused_before_the_model_runs(model_repository: Path) -> None:
    with running(model_repository, models=("digits",), server={"max_response_bytes": 1024}) as server:
        before = server.metrics().get('inferno_inference_count{model="digits",version="1"}', 0.0)
        response = server.request("POST", INFER, digits_json_body(64))  # 64 rows x 10 scores > 1,024 bytes
        assert response.status == 400
        assert "at most 1024 bytes" in response.error() and "max_response_bytes" in response.error()
        assert server.metrics().get('inferno_inference_count{model="digits",version="1"}', 0.0) == before
        assert server.request("POST", INFER, digits_json_body(1)).status == 200


def test_repeated_outputs_are_refused_not_serialized_once_each(server: Server) -> None:
    body = json.dumps({"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]}],
                       "outputs": [{"name": "embedding"}] * 4000}).encode()
    response = server.request("POST", "/v2/models/minilm/infer", body)
    assert response.status == 400 and "embedding" in response.error()
    assert len(response.body) < 1000


# -- strict HTTP --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(model_repository: Path) -> Iterator[Server]:
    with running(model_repository, token=None) as s:
        yield s


@pytest.mark.parametrize("version", ["01", "%20%31", "%D9%A1", "1%20", "+1"])
def test_version_aliases_are_not_version_1(server: Server, version: str) -> None:
    response = server.request("POST", f"/v2/models/digits/versions/{version}/infer", digits_json_body(1))
    assert response.status == 404, (version, response.body)
    assert "version" in response.error()
    assert server.request("POST", "/v2/models/digits/versions/1/infer", digits_json_body(1)).status == 200


def test_an_empty_path_segment_is_not_the_latest_version(server: Server) -> None:
    response = server.request("POST", "/v2/models/digits/versions//infer", digits_json_body(1))
    assert response.status == 404 and "empty segment" in response.error()


def test_a_gzip_body_with_trailing_junk_or_cut_short_is_400(server: Server) -> None:
    packed = gzip.compress(digits_json_body(1))
    headers = {"Content-Encoding": "gzip"}
    assert server.request("POST", INFER, packed, headers).status == 200
    junk = server.request("POST", INFER, packed + b"junk", headers)
    assert junk.status == 400 and "after the compressed stream" in junk.error()
    cut = server.request("POST", INFER, packed[:-12], headers)
    assert cut.status == 400 and "gzip" in cut.error()


def test_two_authorization_headers_are_400(model_repository: Path) -> None:
    with running(model_repository, models=("digits",), token="s3cret") as server:
        sock = _connect(server)
        try:
            raw = (b"GET /v2/models/digits HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n"
                   b"Authorization: Bearer s3cret\r\nContent-Length: 0\r\n\r\n")
            status, _, body = _answer(sock, raw)
        finally:
            sock.close()
        assert status == 400 and "authorization" in json.loads(body)["error"]
        assert server.request("GET", "/v2/models/digits", headers={"Authorization": "Bearer s3cret"}).status == 200


def test_names_are_shown_as_sent_and_raw_non_ascii_is_a_json_400(server: Server) -> None:
    response = server.request("POST", "/v2/models/%C3%A9t%C3%A9/infer", digits_json_body(1))
    assert response.status == 404 and "'été'" in response.error()
    sock = _connect(server)
    try:
        sock.sendall("POST /v2/models/été/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
        answer = _closed_by_server(sock)
    finally:
        sock.close()
    assert answer is not None and answer.startswith(b"HTTP/1.1 400"), answer
    assert b"application/json" in answer and b'"error"' in answer and b"invalid request" in answer


def test_405_says_which_method_is_allowed(server: Server) -> None:
    response = server.request("GET", INFER)
    assert response.status == 405 and response.headers.get("allow") == "POST"
    response = server.request("POST", "/v2/health/live")
    assert response.status == 405 and response.headers.get("allow") == "GET"


def test_health_bodies_are_what_kserve_clients_read(server: Server) -> None:
    assert server.request("GET", "/v2/health/live").json() == {"live": True}
    assert server.request("GET", "/v2/health/ready").json() == {"ready": True}
    assert server.request("GET", "/v2/models/digits/ready").json() == {"ready": True}


def test_client_visible_messages_hold_no_file_system_path(model_repository: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(model_repository / "digits", repo / "digits")
    shutil.copytree(model_repository / "digits", repo / "broken")
    (repo / "broken" / "1" / "model.onnx").write_bytes(b"not an onnx model")
    with running(repo) as server:
        index = server.request("POST", "/v2/repository/index", b"{}")
        assert index.status == 200
        reasons = " ".join(row["reason"] for row in index.json())
        assert reasons and str(repo) not in reasons and str(tmp_path) not in reasons, reasons
        load = server.request("POST", "/v2/repository/models/broken/load", b"{}")
        assert load.status == 400 and str(tmp_path) not in load.error(), load.error()
        infer = server.request("POST", "/v2/models/broken/infer", digits_json_body(1))
        assert infer.status == 500 and "retrying will not help" in infer.error()
        assert str(tmp_path) not in infer.error() and "retry-after" not in infer.headers, infer.headers


def test_a_plan_that_names_python_code_is_refused_without_trust(model_repository: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(model_repository / "digits", repo / "digits")
    shutil.copytree(model_repository / "digits", repo / "evil")
    plan_file = repo / "evil" / "1" / "plan.json"
    plan = json.loads(plan_file.read_text())
    plan.update(runtime="torch", source="os:abort")  # importing and calling it kills the server
    plan_file.write_text(json.dumps(plan))
    with running(repo) as server:
        load = server.request("POST", "/v2/repository/models/evil/load", b"{}")
        assert load.status == 400 and "--trust" in load.error(), load.body
        assert_good_request(server)
        assert server.request("GET", "/v2/health/live").status == 200
