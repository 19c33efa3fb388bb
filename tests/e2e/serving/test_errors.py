"""Bad requests get a 4xx naming what was wrong, and the server keeps serving; overload gets 503/504."""

from __future__ import annotations

import gzip
import json
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from .support import (
    Response,
    Server,
    assert_good_request,
    digits_inputs,
    digits_pixels,
    parse_metrics,
    running,
    text_inputs,
)

pytestmark = pytest.mark.slow

MAX_BATCH = 8
MAX_BODY = 64 * 1024
TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def server(model_repository: Path) -> Iterator[Server]:
    with running(model_repository, max_batch_size=MAX_BATCH, max_body_bytes=MAX_BODY) as s:
        yield s


def pixels(shape: list[int] | None = None, datatype: str = "FP32", name: str = "pixels",
           data: Any = None, **extra: Any) -> dict[str, Any]:
    shape = [1, 1, 8, 8] if shape is None else shape
    if data is None:
        data = [0.5] * int(np.prod(shape))
    return {"name": name, "shape": shape, "datatype": datatype, "data": data, **extra}


def body(*inputs: dict[str, Any], **extra: Any) -> bytes:
    return json.dumps({"inputs": list(inputs), **extra}).encode()


def binary_body(header: dict[str, Any], payload: bytes) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(header).encode()
    return raw + payload, {"Inference-Header-Content-Length": str(len(raw))}


def _binary_pixels(size: int, payload_bytes: int) -> tuple[bytes, dict[str, str]]:
    header = {"inputs": [{"name": "pixels", "shape": [1, 1, 8, 8], "datatype": "FP32",
                          "parameters": {"binary_data_size": size}}]}
    return binary_body(header, b"\0" * payload_bytes)


def _bytes_text(items: list[bytes]) -> tuple[bytes, dict[str, str]]:
    payload = b"".join(struct.pack("<I", len(b)) + b for b in items)
    header = {"inputs": [{"name": "text", "shape": [len(items)], "datatype": "BYTES",
                          "parameters": {"binary_data_size": len(payload)}}]}
    return binary_body(header, payload)


# (id, path, body, extra headers, status, fragments the error must contain)
CASES: list[tuple[str, str, bytes, dict[str, str], int, tuple[str, ...]]] = [
    ("unknown-model", "/v2/models/nope/infer", body(pixels()), {}, 404, ("'nope'", "digits")),
    ("unknown-version", "/v2/models/digits/versions/7/infer", body(pixels()), {}, 404, ("'7'", "[1]")),
    ("bad-version", "/v2/models/digits/versions/latest/infer", body(pixels()), {}, 404, ("'latest'",)),
    ("malformed-json", "/v2/models/digits/infer", b'{"inputs": [{"name": ', {}, 400, ("invalid JSON",)),
    ("json-not-object", "/v2/models/digits/infer", b"[1, 2, 3]", {}, 400, ("JSON object", "a list")),
    ("empty-body", "/v2/models/digits/infer", b"", {}, 400, ("JSON",)),
    ("no-inputs", "/v2/models/digits/infer", body(), {}, 400, ("'inputs'", "non-empty")),
    ("unknown-input", "/v2/models/digits/infer", body(pixels(name="pixelz")), {}, 400, ("pixelz", "pixels")),
    ("extra-input", "/v2/models/digits/infer", body(pixels(), pixels(name="more")), {}, 400, ("more",)),
    ("duplicate-input", "/v2/models/digits/infer", body(pixels(), pixels()), {}, 400, ("'pixels'", "twice")),
    ("wrong-datatype", "/v2/models/digits/infer", body(pixels(datatype="INT32", data=[1] * 64)), {}, 400,
     ("'pixels'", "FP32 [-1, 1, 8, 8]", "INT32 [1, 1, 8, 8]")),
    ("unknown-datatype", "/v2/models/digits/infer", body(pixels(datatype="FLOAT")), {}, 400,
     ("'pixels'", "'FLOAT'", "FP32")),
    ("wrong-shape", "/v2/models/digits/infer", body(pixels(shape=[1, 64])), {}, 400,
     ("'pixels'", "FP32 [-1, 1, 8, 8]", "FP32 [1, 64]")),
    ("negative-shape", "/v2/models/digits/infer", body(pixels(shape=[-1, 1, 8, 8], data=[0.0] * 64)), {}, 400,
     ("'pixels'", "shape")),
    ("data-length", "/v2/models/digits/infer", body(pixels(data=[0.5] * 63)), {}, 400,
     ("'pixels'", "64 elements", "63")),
    ("data-not-numbers", "/v2/models/digits/infer", body(pixels(data=["x"] * 64)), {}, 400,
     ("'pixels'", "FP32", "numbers")),
    ("data-and-binary", "/v2/models/digits/infer",
     body(pixels(parameters={"binary_data_size": 256})), {}, 400, ("'pixels'", "both")),
    ("batch-over-max", "/v2/models/digits/infer", body(pixels(shape=[MAX_BATCH + 1, 1, 8, 8])), {}, 400,
     (f"at most {MAX_BATCH} rows", f"got {MAX_BATCH + 1}")),
    ("unknown-output", "/v2/models/digits/infer", body(pixels(), outputs=[{"name": "logits"}]), {}, 400,
     ("'logits'", "probabilities")),
    ("bad-classification", "/v2/models/digits/infer",
     body(pixels(), outputs=[{"name": "probabilities", "parameters": {"classification": -2}}]), {}, 400,
     ("classification", "-2")),
    ("bad-timeout", "/v2/models/digits/infer", body(pixels(), parameters={"timeout": "soon"}), {}, 400,
     ("timeout", "'soon'")),
    ("binary-size-short", "/v2/models/digits/infer", *_binary_pixels(256, 252), 400,
     ("'pixels'", "binary_data_size 256", "252")),
    ("binary-size-extra", "/v2/models/digits/infer", *_binary_pixels(256, 260), 400, ("256", "260")),
    ("binary-size-vs-shape", "/v2/models/digits/infer", *_binary_pixels(252, 252), 400,
     ("'pixels'", "256 bytes", "252")),
    ("header-length-too-big", "/v2/models/digits/infer", body(pixels()),
     {"Inference-Header-Content-Length": "999999"}, 400, ("Inference-Header-Content-Length", "999999")),
    ("header-length-not-a-number", "/v2/models/digits/infer", body(pixels()),
     {"Inference-Header-Content-Length": "twelve"}, 400, ("Inference-Header-Content-Length", "twelve")),
    ("header-length-cuts-json", "/v2/models/digits/infer", body(pixels()),
     {"Inference-Header-Content-Length": "20"}, 400, ("invalid JSON",)),
    ("text-wrong-datatype", "/v2/models/minilm/infer",
     body({"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}), {}, 400,
     ("'text'", "BYTES [n]", "FP32 [1]")),
    ("text-wrong-shape", "/v2/models/minilm/infer",
     body({"name": "text", "shape": [2, 2], "datatype": "BYTES", "data": ["a", "b", "c", "d"]}), {}, 400,
     ("'text'", "BYTES [2, 2]")),
    ("text-not-strings", "/v2/models/minilm/infer",
     body({"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a", 3]}), {}, 400,
     ("'text'", "strings", "a number")),
    ("text-invalid-utf8", "/v2/models/minilm/infer", *_bytes_text([b"fine", b"\xff\xfe bad"]), 400,
     ("'text'", "UTF-8")),
    ("text-truncated-bytes", "/v2/models/minilm/infer",
     *binary_body({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                               "parameters": {"binary_data_size": 6}}]}, struct.pack("<I", 10) + b"ab"),
     400, ("'text'", "claims 10 bytes")),
    ("text-batch-over-max", "/v2/models/minilm/infer",
     body({"name": "text", "shape": [MAX_BATCH + 1], "datatype": "BYTES", "data": ["x"] * (MAX_BATCH + 1)}), {},
     400, (f"at most {MAX_BATCH} rows",)),
    ("gzip-not-gzip", "/v2/models/digits/infer", body(pixels()), {"Content-Encoding": "gzip"}, 400,
     ("gzip", "decompress")),
    ("unknown-encoding", "/v2/models/digits/infer", body(pixels()), {"Content-Encoding": "br"}, 400,
     ("content-encoding", "'br'")),
    ("no-such-endpoint", "/v2/models/digits/predict", body(pixels()), {}, 404, ("'predict'",)),
    ("no-such-path", "/v3/whatever", b"", {}, 404, ("/v3/whatever",)),
    ("body-too-large", "/v2/models/digits/infer", b"x" * (MAX_BODY + 1), {}, 413,
     (f"at most {MAX_BODY} bytes", str(MAX_BODY + 1))),
    ("gzip-too-large", "/v2/models/digits/infer", gzip.compress(b" " * (MAX_BODY * 4)),
     {"Content-Encoding": "gzip"}, 413, ("decompressed",)),
]


@pytest.mark.parametrize(("path", "payload", "headers", "status", "fragments"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_request_is_refused_and_the_server_keeps_serving(
    server: Server, path: str, payload: bytes, headers: dict[str, str], status: int, fragments: tuple[str, ...]
) -> None:
    response = server.request("POST", path, payload, {"Content-Type": "application/json", **headers})
    assert response.status == status, response.body
    message = response.error()
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert_good_request(server)


def test_body_over_the_limit_sent_chunked_is_refused(server: Server) -> None:
    import http.client

    conn = http.client.HTTPConnection(server.thread.config.host, server.thread.port, timeout=30)
    try:
        chunks = (b"x" * 8192 for _ in range(MAX_BODY // 8192 + 2))
        conn.request("POST", "/v2/models/digits/infer", body=chunks, encode_chunked=True)
        reply = conn.getresponse()
        assert reply.status == 413
        assert "at most" in json.loads(reply.read())["error"]
    finally:
        conn.close()
    assert_good_request(server)


REPOSITORY_CASES = [
    ("/v2/repository/models/digits/load", b'{"parameters": [1, 2]}', 400, ("parameters", "object")),
    ("/v2/repository/models/digits/load", b'{"parameters": 5}', 400, ("parameters", "object")),
    ("/v2/repository/models/digits/load", b'{"parameters": "config"}', 400, ("parameters", "object")),
    ("/v2/repository/models/digits/load", b'{"parameters": {"config": "{}"}}', 400, ("'config'", "serve.json")),
    ("/v2/repository/models/digits/load", b"[]", 400, ("JSON object",)),
    ("/v2/repository/models/digits/load", b"{not json", 400, ("invalid JSON",)),
    ("/v2/repository/models/.hidden/load", b"", 400, ("'.hidden'",)),
    ("/v2/repository/models/nope/load", b"", 404, ("'nope'",)),
    ("/v2/repository/models/nope/unload", b"", 404, ("'nope'",)),
    ("/v2/repository/models/digits/reload", b"", 404, ("reload",)),
    ("/v2/repository/index", b"7", 400, ("JSON object",)),
]


@pytest.mark.parametrize(("path", "payload", "status", "fragments"), REPOSITORY_CASES,
                         ids=[f"{p.rsplit('/', 2)[-2]}-{p.rsplit('/', 1)[-1]}-{b[:12]!r}" for p, b, _, _ in REPOSITORY_CASES])
def test_bad_repository_request_is_refused(server: Server, path: str, payload: bytes, status: int,
                                           fragments: tuple[str, ...]) -> None:
    response = server.request("POST", path, payload)
    assert response.status == status, response.body
    for fragment in fragments:
        assert fragment in response.error(), (fragment, response.error())
    assert server.manager.loaded() == {"digits": ["1"], "minilm": ["1"]}
    assert_good_request(server)


def test_wrong_method_is_405(server: Server) -> None:
    response = server.request("GET", "/v2/models/digits/infer")
    assert response.status == 405 and "POST" in response.error()
    response = server.request("POST", "/v2/models/digits")
    assert response.status == 405 and "GET" in response.error()


def test_tritonclient_sees_the_errors(server: Server) -> None:
    client = server.client()
    wrong_type = httpclient.InferInput("pixels", [1, 1, 8, 8], "FP64")
    wrong_type.set_data_from_numpy(np.zeros((1, 1, 8, 8), dtype=np.float64), binary_data=True)
    with pytest.raises(InferenceServerException) as info:
        client.infer("digits", [wrong_type])
    assert str(info.value.status()) == "400"
    assert "FP32 [-1, 1, 8, 8]" in info.value.message() and "FP64 [1, 1, 8, 8]" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        client.infer("digits", digits_inputs(digits_pixels(MAX_BATCH + 1), binary=True))
    assert str(info.value.status()) == "400" and f"at most {MAX_BATCH} rows" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        client.get_model_metadata("digits", "3")
    assert str(info.value.status()) == "404"
    # refusals are counted as failures of the version they were meant for
    fail = client.get_inference_statistics("digits")["model_stats"][0]["inference_stats"]["fail"]["count"]
    assert fail >= 2
    for algorithm in ("gzip", "deflate"):
        result = client.infer("digits", digits_inputs(digits_pixels(2)), request_compression_algorithm=algorithm)
        assert result.as_numpy("probabilities").shape == (2, 10)


# -- authorization -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def token_server(model_repository: Path) -> Iterator[Server]:
    with running(model_repository, models=("digits",), token=TOKEN) as s:
        yield s


GUARDED = [
    ("GET", "/v2", b""),
    ("GET", "/v2/models/digits", b""),
    ("GET", "/v2/models/digits/ready", b""),
    ("GET", "/v2/models/digits/config", b""),
    ("GET", "/v2/models/stats", b""),
    ("POST", "/v2/models/digits/infer", body(pixels())),
    ("POST", "/v2/repository/index", b""),
    ("GET", "/metrics", b""),
    ("GET", "/openapi.json", b""),
]


@pytest.mark.parametrize(("method", "path", "payload"), GUARDED, ids=[p for _, p, _ in GUARDED])
@pytest.mark.parametrize("given", [None, f"Bearer {TOKEN}x", TOKEN, "Bearer "], ids=["none", "wrong", "no-scheme", "empty"])
def test_missing_or_wrong_token_is_401(token_server: Server, method: str, path: str, payload: bytes,
                                       given: str | None) -> None:
    headers = {} if given is None else {"Authorization": given}
    response = token_server.request(method, path, payload or None, headers)
    assert response.status == 401, response.body
    assert "authorization" in response.error() and "Bearer" in response.error()
    assert response.headers.get("www-authenticate") == "Bearer"


def test_health_answers_without_a_token_and_tritonclient_works_with_one(token_server: Server) -> None:
    for path in ("/v2/health/live", "/v2/health/ready"):
        assert token_server.request("GET", path).status == 200
    client = token_server.client()
    assert client.is_server_live() and client.is_server_ready()
    with pytest.raises(InferenceServerException) as info:
        client.get_model_metadata("digits")
    assert str(info.value.status()) == "401"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get_model_metadata("digits", headers=auth)["name"] == "digits"
    assert client.is_model_ready("digits", headers=auth)
    result = client.infer("digits", digits_inputs(digits_pixels(3), binary=True), headers=auth)
    assert result.as_numpy("probabilities").shape == (3, 10)
    assert client.get_inference_statistics("digits", headers=auth)["model_stats"][0]["inference_count"] == 3
    assert "inferno_request_success_total" in token_server.request("GET", "/metrics", headers=auth).text
    assert_good_request(token_server)


# -- overload: a full queue, a request past its deadline -----------------------------------------


@pytest.fixture(scope="module")
def queued_server(model_repository: Path) -> Iterator[Server]:
    # a batch waits 1 s to fill, and only one request may wait
    with running(model_repository, models=("digits",), max_queue_size=1, max_queue_delay_us=1_000_000) as s:
        yield s


def _concurrently(server: Server, n: int) -> list[Response]:
    start = threading.Barrier(n)
    responses: list[Response] = []
    lock = threading.Lock()

    def send() -> None:
        start.wait(timeout=30)
        response = server.request("POST", "/v2/models/digits/infer", body(pixels()))
        with lock:
            responses.append(response)

    threads = [threading.Thread(target=send) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(responses) == n
    return responses


def test_full_queue_is_503_with_retry_after(queued_server: Server) -> None:
    responses = _concurrently(queued_server, 8)
    statuses = sorted(r.status for r in responses)
    assert set(statuses) <= {200, 503}, [(r.status, r.body) for r in responses]
    assert 200 in statuses and 503 in statuses, statuses
    for r in responses:
        if r.status == 503:
            assert "queue full" in r.error() and "max_queue_size 1" in r.error()
            assert int(r.headers["retry-after"]) >= 1
    metrics = parse_metrics(queued_server.request("GET", "/metrics").text)
    refused = metrics['inferno_request_failure_total{model="digits",protocol="http",reason="rejected",version="1"}']
    assert refused == statuses.count(503)
    assert_good_request(queued_server)


def test_request_past_its_timeout_is_504(queued_server: Server) -> None:
    client = queued_server.client()
    before = client.get_inference_statistics("digits")["model_stats"][0]["inference_stats"]["fail"]["count"]
    with pytest.raises(InferenceServerException) as info:
        client.infer("digits", digits_inputs(digits_pixels(1)), timeout=1000)  # µs, well under the batch delay
    assert str(info.value.status()) == "504" and "timed out" in info.value.message()
    after = client.get_inference_statistics("digits")["model_stats"][0]["inference_stats"]["fail"]["count"]
    assert after == before + 1
    # a generous timeout is not a refusal
    assert client.infer("digits", digits_inputs(digits_pixels(1)), timeout=5_000_000).as_numpy("probabilities").shape == (1, 10)
    assert_good_request(queued_server)


# -- response cache ------------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_cache_answers_the_same_request_twice(model_repository: Path, binary: bool) -> None:
    with running(model_repository, cache_bytes=2**20) as server:
        client = server.client()
        hits = 'inferno_cache_hit_count_total{model="minilm",version="1"}'
        misses = 'inferno_cache_miss_count_total{model="minilm",version="1"}'
        assert client.get_model_config("minilm")["response_cache"] == {"enable": True}

        def ask() -> np.ndarray:
            outputs = [httpclient.InferRequestedOutput("embedding", binary_data=binary)]
            return client.infer("minilm", text_inputs(["cache me", "twice"], binary), outputs=outputs
                                ).as_numpy("embedding")

        first = ask()
        stats = client.get_inference_statistics("minilm")["model_stats"][0]
        assert stats["inference_stats"]["cache_miss"]["count"] == 1
        assert stats["inference_stats"]["cache_hit"]["count"] == 0
        assert server.metrics()[hits] == 0 and server.metrics()[misses] == 1
        second = ask()
        stats = client.get_inference_statistics("minilm")["model_stats"][0]
        assert stats["inference_stats"]["cache_hit"]["count"] == 1
        assert stats["execution_count"] == 1  # the second answer did not run the model
        assert stats["inference_count"] == 4
        assert server.metrics()[hits] == 1
        np.testing.assert_array_equal(first, second)
        # a different request misses
        client.infer("minilm", text_inputs(["cache me", "thrice"], binary))
        assert client.get_inference_statistics("minilm")["model_stats"][0]["inference_stats"]["cache_miss"]["count"] == 2
