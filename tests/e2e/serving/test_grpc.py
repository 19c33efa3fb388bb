"""Triton's gRPC service beside HTTP: the official ``tritonclient.grpc`` (sync, asyncio, streaming)
against a real server on 127.0.0.1, answers compared with the same server's HTTP answers."""

from __future__ import annotations

import asyncio
import queue
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient

grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.grpc import aio as grpcaio  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from .support import Server, digits_inputs, digits_pixels, running, text_inputs  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(model_repository: Path) -> Iterator[Server]:
    with running(model_repository, server={"grpc_port": 0}) as s:
        yield s


def _grpc(server: Server, **kwargs: Any) -> Any:
    return grpcclient.InferenceServerClient(f"127.0.0.1:{server.thread.app.grpc_port}", **kwargs)


def _digits(pixels: np.ndarray) -> list[Any]:
    tensor = grpcclient.InferInput("pixels", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels)
    return [tensor]


def _text(sentences: list[str]) -> list[Any]:
    tensor = grpcclient.InferInput("text", [len(sentences)], "BYTES")
    tensor.set_data_from_numpy(np.array([s.encode() for s in sentences], dtype=object))
    return [tensor]


def _status(info: pytest.ExceptionInfo[InferenceServerException]) -> str:
    return str(info.value.status())


def test_health_and_metadata_match_http(server: Server) -> None:
    client, http = _grpc(server), server.client()
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("digits") and not client.is_model_ready("nope")
    assert client.get_server_metadata().name == "inferno"
    for model in ("digits", "minilm"):
        meta = client.get_model_metadata(model, as_json=True)
        want = http.get_model_metadata(model)
        for kind in ("inputs", "outputs"):
            got = [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in meta[kind]]
            assert got == [(t["name"], t["datatype"], t["shape"]) for t in want[kind]], (model, kind)
    config = client.get_model_config("digits", as_json=True)["config"]
    want_config = http.get_model_config("digits")
    assert int(config["max_batch_size"]) == want_config["max_batch_size"]
    assert [int(d) for d in config["input"][0]["dims"]] == want_config["input"][0]["dims"]
    assert config["input"][0]["data_type"] == want_config["input"][0]["data_type"]


def test_digits_and_minilm_answer_as_over_http(server: Server) -> None:
    client, http = _grpc(server), server.client()
    pixels = digits_pixels(5)
    got = client.infer("digits", _digits(pixels)).as_numpy("probabilities")
    want = http.infer("digits", digits_inputs(pixels)).as_numpy("probabilities")
    np.testing.assert_allclose(got, want, rtol=1e-6)
    sentences = ["a cat sat on the mat", "the stock market fell sharply today"]
    got = client.infer("minilm", _text(sentences)).as_numpy("embedding")
    want = http.infer("minilm", text_inputs(sentences)).as_numpy("embedding")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_classification_answers_top_k_as_over_http(server: Server) -> None:
    client, http = _grpc(server), server.client()
    pixels = digits_pixels(3)
    got = client.infer("digits", _digits(pixels),
                       outputs=[grpcclient.InferRequestedOutput("probabilities", class_count=3)])
    want = http.infer("digits", digits_inputs(pixels),
                      outputs=[httpclient.InferRequestedOutput("probabilities", class_count=3)])
    assert got.as_numpy("probabilities").tolist() == want.as_numpy("probabilities").tolist()


def test_bad_input_is_invalid_argument_naming_it_and_unknown_model_is_not_found(server: Server) -> None:
    client = _grpc(server)
    bad = grpcclient.InferInput("pixels", [1, 1, 8, 8], "INT32")
    bad.set_data_from_numpy(np.zeros((1, 1, 8, 8), np.int32))
    with pytest.raises(InferenceServerException) as info:
        client.infer("digits", [bad])
    assert _status(info) == "StatusCode.INVALID_ARGUMENT" and "'pixels'" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        client.infer("nope", _digits(digits_pixels(1)))
    assert _status(info) == "StatusCode.NOT_FOUND" and "'nope'" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        client.infer("digits", _digits(digits_pixels(1)), model_version="01")
    assert _status(info) == "StatusCode.NOT_FOUND"
    assert client.infer("digits", _digits(digits_pixels(1))).as_numpy("probabilities").shape == (1, 10)


def test_a_stream_survives_a_bad_request(server: Server) -> None:
    client = _grpc(server)
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        bad = grpcclient.InferInput("pixels", [1, 1, 8, 8], "INT32")
        bad.set_data_from_numpy(np.zeros((1, 1, 8, 8), np.int32))
        client.async_stream_infer("digits", _digits(digits_pixels(1)), request_id="1")
        client.async_stream_infer("digits", [bad], request_id="2")
        client.async_stream_infer("digits", _digits(digits_pixels(2)), request_id="3")
        got = [answers.get(timeout=30) for _ in range(3)]
    finally:
        client.stop_stream()
    assert got[0][1] is None and got[0][0].as_numpy("probabilities").shape == (1, 10)
    assert got[1][0] is None and "'pixels'" in str(got[1][1])
    assert got[2][1] is None and got[2][0].as_numpy("probabilities").shape == (2, 10)


def test_the_asyncio_client_works(server: Server) -> None:
    async def scenario() -> np.ndarray:
        client = grpcaio.InferenceServerClient(f"127.0.0.1:{server.thread.app.grpc_port}")
        try:
            assert await client.is_server_ready()
            tensor = grpcaio.InferInput("pixels", [2, 1, 8, 8], "FP32")
            tensor.set_data_from_numpy(digits_pixels(2))
            return (await client.infer("digits", [tensor])).as_numpy("probabilities")
        finally:
            await client.close()

    got = asyncio.run(scenario())
    want = server.client().infer("digits", digits_inputs(digits_pixels(2))).as_numpy("probabilities")
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_statistics_count_grpc_requests(server: Server) -> None:
    client = _grpc(server)
    before = int(client.get_inference_statistics("digits", as_json=True)["model_stats"][0].get("inference_count", 0))
    client.infer("digits", _digits(digits_pixels(3)))
    after = client.get_inference_statistics("digits", as_json=True)["model_stats"][0]
    assert int(after["inference_count"]) == before + 3
    http = server.request("GET", "/v2/models/digits/stats").json()["model_stats"][0]
    assert http["inference_count"] == int(after["inference_count"])


def test_shared_memory_is_unimplemented_with_a_reason(server: Server) -> None:
    with pytest.raises(InferenceServerException) as info:
        _grpc(server).register_system_shared_memory("r", "/k", 64)
    assert _status(info) == "StatusCode.UNIMPLEMENTED" and "raw_input_contents" in info.value.message()


def test_load_and_unload_through_grpc(model_repository: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(model_repository / "digits", repo / "digits")
    with running(repo, server={"grpc_port": 0}) as s:
        client = _grpc(s)
        index = client.get_model_repository_index(as_json=True)["models"]
        assert [(m["name"], m["state"]) for m in index] == [("digits", "READY")]
        client.unload_model("digits")
        assert not client.is_model_ready("digits")
        with pytest.raises(InferenceServerException) as info:
            client.infer("digits", _digits(digits_pixels(1)))
        assert _status(info) == "StatusCode.NOT_FOUND"
        client.load_model("digits")
        assert client.is_model_ready("digits")
        assert client.infer("digits", _digits(digits_pixels(1))).as_numpy("probabilities").shape == (1, 10)


def test_a_token_is_required_as_metadata(model_repository: Path) -> None:
    with running(model_repository, models=("digits",), token="s3cret", server={"grpc_port": 0}) as s:
        client = _grpc(s)
        assert client.is_server_live()  # health needs no token, as over HTTP
        with pytest.raises(InferenceServerException) as info:
            client.infer("digits", _digits(digits_pixels(1)))
        assert _status(info) == "StatusCode.UNAUTHENTICATED"
        result = client.infer("digits", _digits(digits_pixels(1)), headers={"authorization": "Bearer s3cret"})
        assert result.as_numpy("probabilities").shape == (1, 10)
