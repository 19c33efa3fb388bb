"""The gRPC service's limits, errors and metrics (issue 17): a full queue, deadlines, message
size, typed contents, graceful shutdown, hot swap and the ``protocol`` label, each against a
real server on 127.0.0.1 through ``tritonclient.grpc`` (or grpc's own stub, where the test
needs what tritonclient hides: trailing metadata, hand-built requests).

Queues are driven as in test_hardening: a fresh batcher waits ``max_queue_delay`` for a full
batch, so one request of one row sits in the queue for 3 s, and the tests wait for what the
server holds (``batcher.queue_depth``), never for a time.
"""

from __future__ import annotations

import queue
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

grpcclient = pytest.importorskip("tritonclient.grpc")
import grpc  # noqa: E402
from tritonclient.grpc import service_pb2, service_pb2_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from inferno import repository  # noqa: E402
from inferno.serving.grpc_service import infer_request  # noqa: E402

from .support import (  # noqa: E402
    SENTENCES,
    Server,
    digits_inputs,
    digits_json_body,
    digits_pixels,
    running,
    text_inputs,
)

pytestmark = pytest.mark.slow

ONE_SLOT = {"max_queue_size": 1, "max_queue_delay_us": 3_000_000, "max_batch_size": 8}
"""One request waits 3 s in the queue for a batch to fill, and no second one fits."""


def _address(server: Server) -> str:
    return f"127.0.0.1:{server.thread.app.grpc_port}"


def _client(server: Server) -> Any:
    return grpcclient.InferenceServerClient(_address(server))


@pytest.fixture
def stub() -> Iterator[Callable[[Server], Any]]:
    """grpc's own stub of the service, for what tritonclient hides (trailing metadata, typed contents)."""
    channels: list[grpc.Channel] = []

    def make(server: Server) -> Any:
        channel = grpc.insecure_channel(_address(server), options=[("grpc.max_send_message_length", -1)])
        channels.append(channel)
        return service_pb2_grpc.GRPCInferenceServiceStub(channel)

    yield make
    for channel in channels:
        channel.close()


def _digits(pixels: np.ndarray) -> list[Any]:
    tensor = grpcclient.InferInput("pixels", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels)
    return [tensor]


def _wait_queued(server: Server, depth: int, model: str = "digits") -> None:
    batcher = server.manager.get(model).batcher
    deadline = time.monotonic() + 20
    while batcher.queue_depth != depth:
        assert time.monotonic() < deadline, f"the queue never held {depth} requests"
        time.sleep(0.01)


def _accepts(server: Server) -> bool:
    try:
        socket.create_connection(("127.0.0.1", server.thread.port), timeout=1).close()
    except OSError:
        return False
    return True


class _Background:
    """One gRPC infer in a thread; ``result()`` is its answer or its exception."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self._answer: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue()
        self._thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], Any]) -> None:
        try:
            self._answer.put((call(), None))
        except BaseException as exc:
            self._answer.put((None, exc))

    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self) -> Any:
        value, error = self._answer.get(timeout=60)
        if error is not None:
            raise error
        return value


def _metric(server: Server, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted({"model": "digits", "version": "1", **labels}.items()))
    return server.metrics().get(f"{name}{{{want}}}", 0.0)


def _digits_request(pixels: np.ndarray, raw: bool = True) -> Any:
    """A hand-built ModelInferRequest for digits; ``raw=False``: without its values."""
    request = service_pb2.ModelInferRequest(model_name="digits")
    request.inputs.add(name="pixels", datatype="FP32", shape=list(pixels.shape))
    if raw:
        request.raw_input_contents.append(pixels.tobytes())
    return request


def _embedding(response: Any) -> np.ndarray:
    out = response.outputs[0]
    return np.frombuffer(response.raw_output_contents[0], np.float32).reshape(list(out.shape))


# -- 1. a full queue ----------------------------------------------------------------------------


def test_a_full_queue_is_unavailable_with_retry_after_and_the_http_message(model_repository: Path,
                                                                         stub: Callable[[Server], Any]) -> None:
    with running(model_repository, models=("digits",), server={"grpc_port": 0}, **ONE_SLOT) as server:
        holder = _Background(lambda: _client(server).infer("digits", _digits(digits_pixels(1))))
        _wait_queued(server, 1)
        http = server.request("POST", "/v2/models/digits/infer", digits_json_body(1))
        assert http.status == 503
        with pytest.raises(grpc.RpcError) as info:
            stub(server).ModelInfer(_digits_request(digits_pixels(1)))
        error: Any = info.value
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert error.details() == http.error() and "queue full" in error.details()
        assert ("retry-after", "1") in tuple(error.trailing_metadata() or ())
        assert holder.result().as_numpy("probabilities").shape == (1, 10)
        assert _metric(server, "inferno_request_failure_total", protocol="grpc", reason="rejected") == 1
        assert _metric(server, "inferno_request_failure_total", protocol="http", reason="rejected") == 1


# -- 2. deadlines -------------------------------------------------------------------------------


def test_the_clients_deadline_is_answered_by_the_server_as_deadline_exceeded(model_repository: Path) -> None:
    with running(model_repository, models=("digits",), server={"grpc_port": 0}, **ONE_SLOT) as server:
        client = _client(server)
        with pytest.raises(InferenceServerException) as info:  # queued for 3 s, the client gives it 0.5 s
            client.infer("digits", _digits(digits_pixels(1)), client_timeout=0.5)
        assert str(info.value.status()) == "StatusCode.DEADLINE_EXCEEDED"
        _wait_queued(server, 0)  # its slot is free again
        # the server dropped it and counted it as a timeout (grpc's own cancellation counted nothing)
        deadline = time.monotonic() + 20
        while not _metric(server, "inferno_request_failure_total", protocol="grpc", reason="timeout"):
            assert time.monotonic() < deadline, "the request the client gave up on was never counted"
            time.sleep(0.01)
        stats = client.get_inference_statistics("digits", as_json=True)["model_stats"][0]["inference_stats"]
        assert int(stats["fail"]["count"]) == 1
        assert client.infer("digits", _digits(digits_pixels(1))).as_numpy("probabilities").shape == (1, 10)


def test_the_server_gives_itself_less_time_than_the_clients_deadline() -> None:
    # so that it answers DEADLINE_EXCEEDED with its reason ("timed out in the queue") before
    # the client's own timer ends the call with grpc's bare "Deadline Exceeded"
    request = _digits_request(digits_pixels(1))
    ours = infer_request(request, deadline_s=1.0).timeout_us
    assert ours is not None and 900_000 <= ours < 1_000_000
    request.parameters["timeout"].int64_param = 300_000
    assert infer_request(request, deadline_s=1.0).timeout_us == 300_000  # the smaller one wins
    assert infer_request(request, deadline_s=None).timeout_us == 300_000


def test_a_call_the_client_cancels_frees_its_slot_and_is_counted(model_repository: Path,
                                                                stub: Callable[[Server], Any]) -> None:
    with running(model_repository, models=("digits",), server={"grpc_port": 0}, **ONE_SLOT) as server:
        request = _digits_request(digits_pixels(1))
        call = stub(server).ModelInfer.future(request)
        _wait_queued(server, 1)
        assert call.cancel()
        _wait_queued(server, 0)
        deadline = time.monotonic() + 20
        while not _metric(server, "inferno_request_failure_total", protocol="grpc", reason="cancelled"):
            assert time.monotonic() < deadline, "the cancelled request was never counted"
            time.sleep(0.01)
        stats = server.request("GET", "/v2/models/digits/stats").json()["model_stats"][0]["inference_stats"]
        assert stats["fail"]["count"] == 1 and stats["success"]["count"] == 0


def test_the_timeout_parameter_is_deadline_exceeded(model_repository: Path) -> None:
    with running(model_repository, models=("digits",), server={"grpc_port": 0}, **ONE_SLOT) as server:
        with pytest.raises(InferenceServerException) as info:
            _client(server).infer("digits", _digits(digits_pixels(1)), timeout=200_000)  # microseconds
        assert str(info.value.status()) == "StatusCode.DEADLINE_EXCEEDED"
        assert "timed out" in info.value.message()
        assert _metric(server, "inferno_request_failure_total", protocol="grpc", reason="timeout") == 1


# -- 3. message size ----------------------------------------------------------------------------


def test_the_message_size_limit_is_max_body_bytes(model_repository: Path) -> None:
    limit = 64 * 1024
    # a larger response budget must not raise the request limit with it
    with running(model_repository, models=("digits",), max_body_bytes=limit,
                 server={"grpc_port": 0, "max_response_bytes": 2**20}) as server:
        client = _client(server)
        assert client.infer("digits", _digits(digits_pixels(8))).as_numpy("probabilities").shape == (8, 10)
        too_big = digits_pixels(300)  # 76,800 bytes of pixels
        with pytest.raises(InferenceServerException) as info:
            client.infer("digits", _digits(too_big))
        assert str(info.value.status()) == "StatusCode.RESOURCE_EXHAUSTED"
        assert str(limit) in info.value.message(), info.value.message()
        http = server.request("POST", "/v2/models/digits/infer", digits_json_body(300))
        assert http.status == 413 and str(limit) in http.error()
        assert client.infer("digits", _digits(digits_pixels(1))).as_numpy("probabilities").shape == (1, 10)


# -- 4. typed contents --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(model_repository: Path) -> Iterator[Server]:
    with running(model_repository, server={"grpc_port": 0}) as s:
        yield s


def test_fp32_contents_answer_as_raw_contents(server: Server, stub: Callable[[Server], Any]) -> None:
    pixels = digits_pixels(3, seed=4)
    request = _digits_request(pixels, raw=False)
    request.inputs[0].contents.fp32_contents.extend(pixels.reshape(-1).tolist())
    got = _embedding(stub(server).ModelInfer(request))
    want = _client(server).infer("digits", _digits(pixels)).as_numpy("probabilities")
    np.testing.assert_array_equal(got, want)


def test_bytes_contents_answer_as_over_http(server: Server, stub: Callable[[Server], Any]) -> None:
    request = service_pb2.ModelInferRequest(model_name="minilm")
    text = request.inputs.add(name="text", datatype="BYTES", shape=[len(SENTENCES)])
    text.contents.bytes_contents.extend(s.encode() for s in SENTENCES)
    got = _embedding(stub(server).ModelInfer(request))
    want = server.client().infer("minilm", text_inputs(SENTENCES)).as_numpy("embedding")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_raw_and_typed_contents_in_one_request_are_invalid_argument(server: Server,
                                                                   stub: Callable[[Server], Any]) -> None:
    pixels = digits_pixels(1)
    request = _digits_request(pixels)
    request.inputs[0].contents.fp32_contents.extend(pixels.reshape(-1).tolist())
    with pytest.raises(grpc.RpcError) as info:
        stub(server).ModelInfer(request)
    error: Any = info.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'pixels'" in error.details() and "raw_input_contents" in error.details()


def test_typed_contents_in_the_wrong_field_name_the_right_one(server: Server, stub: Callable[[Server], Any]) -> None:
    request = _digits_request(digits_pixels(1), raw=False)
    request.inputs[0].contents.int_contents.extend([1] * 64)
    with pytest.raises(grpc.RpcError) as info:
        stub(server).ModelInfer(request)
    error: Any = info.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'pixels'" in error.details() and "fp32_contents" in error.details() and "int_contents" in error.details()


def test_bytes_typed_contents_of_the_wrong_shape_are_invalid_argument(server: Server,
                                                                     stub: Callable[[Server], Any]) -> None:
    request = service_pb2.ModelInferRequest(model_name="minilm")
    text = request.inputs.add(name="text", datatype="BYTES", shape=[3])
    text.contents.bytes_contents.extend([b"one", b"two"])
    with pytest.raises(grpc.RpcError) as info:
        stub(server).ModelInfer(request)
    error: Any = info.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "'text'" in error.details()


# -- 5. graceful shutdown -----------------------------------------------------------------------


def test_stopping_the_server_lets_an_in_flight_grpc_request_finish(model_repository: Path) -> None:
    with running(model_repository, models=("digits",), server={"grpc_port": 0}, **ONE_SLOT) as server:
        # a full batch first: the batcher then waits for a full one again (it aims at recent sizes)
        pixels = digits_pixels(8, seed=9)
        want = server.client().infer("digits", digits_inputs(pixels)).as_numpy("probabilities")[:1]
        in_flight = _Background(lambda: _client(server).infer("digits", _digits(pixels[:1])))
        _wait_queued(server, 1)
        server.thread.stop()  # as on SIGTERM, while the request waits for its batch
        np.testing.assert_allclose(in_flight.result().as_numpy("probabilities"), want, rtol=1e-5, atol=1e-7)
        with pytest.raises(InferenceServerException) as info:
            _client(server).is_server_live(client_timeout=5)
        assert str(info.value.status()) in ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED")


def test_grpc_stops_taking_requests_when_http_does(model_repository: Path) -> None:
    # gRPC used to accept new requests while HTTP drained, only stopping after it
    room = {**ONE_SLOT, "max_queue_size": 2}  # room in the queue: a refusal is not "queue full"
    with running(model_repository, models=("digits",), server={"grpc_port": 0}, **room) as server:
        pixels = digits_pixels(8, seed=9)
        server.client().infer("digits", digits_inputs(pixels))  # a full batch: the next waits for one
        in_flight = _Background(lambda: server.client().infer("digits", digits_inputs(pixels[:1])))
        _wait_queued(server, 1)
        stopping = threading.Thread(target=server.thread.stop, daemon=True)
        stopping.start()  # the HTTP request holds the drain for up to its batch delay
        deadline = time.monotonic() + 20
        while _accepts(server):  # HTTP has stopped accepting: the drain has begun
            assert time.monotonic() < deadline, "the server never began to stop"
            time.sleep(0.01)
        assert not in_flight.done(), "the drain must still be holding the HTTP request"
        with pytest.raises(InferenceServerException) as info:
            _client(server).infer("digits", _digits(pixels[:1]), client_timeout=10)
        assert str(info.value.status()) == "StatusCode.UNAVAILABLE", info.value
        assert "queue full" not in info.value.message()
        assert in_flight.result().as_numpy("probabilities").shape == (1, 10)
        stopping.join(timeout=60)


# -- 6. hot swap --------------------------------------------------------------------------------


def test_hot_swap_through_grpc_fails_no_request(digits_only_copy: Path) -> None:
    repo = digits_only_copy
    with running(repo, models=("digits",), server={"grpc_port": 0}) as server:
        stop = threading.Event()
        versions: list[str] = []
        failures: list[BaseException] = []

        def send(worker: int) -> None:
            client = _client(server)
            pixels = digits_pixels(2, seed=worker)
            for _ in range(100_000):  # bounded; stopped long before
                if stop.is_set():
                    break
                try:
                    result = client.infer("digits", _digits(pixels))
                    np.testing.assert_allclose(result.as_numpy("probabilities").sum(1), 1.0, atol=1e-4)
                except BaseException as exc:
                    failures.append(exc)
                    return
                versions.append(result.get_response().model_version)
            client.close()

        def wait_for(predicate: Callable[[], bool]) -> None:
            deadline = time.monotonic() + 30
            while not predicate() and not failures and time.monotonic() < deadline:
                time.sleep(0.01)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        try:
            wait_for(lambda: len(versions) >= 20)
            repository.write_version(
                repo, "digits", lambda staging, final: shutil.copytree(repo / "digits" / "1", staging,
                                                                       dirs_exist_ok=True))
            _client(server).load_model("digits")
            swapped = len(versions)
            wait_for(lambda: versions[swapped:].count("2") >= 20)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)
        assert not failures, failures[:3]
        assert versions[-1] == "2" and "1" in versions
        stats = _client(server).get_inference_statistics("digits", as_json=True)["model_stats"]
        assert [(s["version"], int(s["inference_stats"].get("fail", {}).get("count", 0))) for s in stats] == [("2", 0)]


# -- 7. metrics and statistics of both protocols ------------------------------------------------


def test_request_metrics_carry_the_protocol_and_statistics_count_both(server: Server,
                                                                     stub: Callable[[Server], Any]) -> None:
    def stats() -> dict[str, Any]:
        return server.request("GET", "/v2/models/digits/stats").json()["model_stats"][0]["inference_stats"]

    names = ("inferno_request_success_total", "inferno_request_duration_seconds_count")
    before = {(n, p): _metric(server, n, protocol=p) for n in names for p in ("http", "grpc")}
    failed_before = {p: _metric(server, "inferno_request_failure_total", protocol=p, reason="rejected")
                     for p in ("http", "grpc")}
    stats_before = stats()
    client = _client(server)
    client.infer("digits", _digits(digits_pixels(2)))
    client.infer("digits", _digits(digits_pixels(1)))
    server.client().infer("digits", digits_inputs(digits_pixels(1)))
    bad = _digits_request(digits_pixels(1), raw=False)
    bad.raw_input_contents.append(b"\0" * 8)  # 2 floats for a shape of 64
    with pytest.raises(grpc.RpcError) as info:
        stub(server).ModelInfer(bad)
    error: Any = info.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "'pixels'" in error.details()
    assert server.request("POST", "/v2/models/digits/infer", b'{"inputs": []}').status == 400
    after = {(n, p): _metric(server, n, protocol=p) for n in names for p in ("http", "grpc")}
    assert {k: after[k] - before[k] for k in after} == {
        ("inferno_request_success_total", "http"): 1, ("inferno_request_success_total", "grpc"): 2,
        ("inferno_request_duration_seconds_count", "http"): 1,
        ("inferno_request_duration_seconds_count", "grpc"): 2,
    }
    for protocol in ("http", "grpc"):
        failed = _metric(server, "inferno_request_failure_total", protocol=protocol, reason="rejected")
        assert failed - failed_before[protocol] == 1, protocol
    got = stats()
    assert got["success"]["count"] - stats_before["success"]["count"] == 3
    assert got["fail"]["count"] - stats_before["fail"]["count"] == 2
    over_grpc = client.get_inference_statistics("digits", as_json=True)["model_stats"][0]["inference_stats"]
    assert int(over_grpc["success"]["count"]) == got["success"]["count"]
    assert int(over_grpc["fail"]["count"]) == got["fail"]["count"]


def test_a_stream_request_counts_as_grpc(server: Server) -> None:
    before = _metric(server, "inferno_request_success_total", protocol="grpc")
    client = _client(server)
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        client.async_stream_infer("digits", _digits(digits_pixels(1)))
        result, error = answers.get(timeout=30)
    finally:
        client.stop_stream()
    assert error is None and result.as_numpy("probabilities").shape == (1, 10)
    assert _metric(server, "inferno_request_success_total", protocol="grpc") - before == 1


# -- 8. the stream's token ----------------------------------------------------------------------


def test_a_stream_needs_the_token_and_works_with_it(model_repository: Path) -> None:
    with running(model_repository, models=("digits",), token="s3cret", server={"grpc_port": 0}) as server:
        for headers, expect_ok in (({}, False), ({"authorization": "Bearer wrong"}, False),
                                   ({"authorization": "Bearer s3cret"}, True)):
            client = _client(server)
            answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
            client.start_stream(callback=lambda result, error, a=answers: a.put((result, error)), headers=headers)
            try:
                try:
                    client.async_stream_infer("digits", _digits(digits_pixels(1)))
                except InferenceServerException:  # refused before this request went out
                    assert not expect_ok
                result, error = answers.get(timeout=30)  # the refusal comes through the callback
            finally:
                client.stop_stream()
            if expect_ok:
                assert error is None and result.as_numpy("probabilities").shape == (1, 10)
            else:
                assert result is None and "UNAUTHENTICATED" in str(error.status()), error
                assert "authorization" in error.message()


def test_a_token_given_twice_or_wrong_is_refused(model_repository: Path,
                                                        stub: Callable[[Server], Any]) -> None:
    with running(model_repository, models=("digits",), token="s3cret", server={"grpc_port": 0}) as server:
        call = stub(server)
        request = service_pb2.ModelMetadataRequest(name="digits")
        assert call.ModelMetadata(request, metadata=(("authorization", "Bearer s3cret"),)).name == "digits"
        for metadata in ((("authorization", "Bearer s3cret"), ("authorization", "Bearer s3cret")),
                         (("authorization", "Bearer s3cre"),)):
            with pytest.raises(grpc.RpcError) as info:
                call.ModelMetadata(request, metadata=metadata)
            error: Any = info.value
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED and "authorization" in error.details()

