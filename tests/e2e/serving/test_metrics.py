"""Prometheus metrics and the OpenAPI document of a running server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import Server, digits_inputs, digits_pixels, running, text_inputs

pytestmark = pytest.mark.slow

DIGITS = '{model="digits",version="1"}'
MINILM = '{model="minilm",version="1"}'
HTTP_DIGITS = '{model="digits",protocol="http",version="1"}'
HTTP_MINILM = '{model="minilm",protocol="http",version="1"}'
"""The request metrics also carry the protocol."""

COUNTERS = [
    "inferno_inference_count_total",
    "inferno_inference_exec_count_total",
    "inferno_inference_queue_duration_us_total",
    "inferno_inference_compute_duration_us_total",
    "inferno_cache_hit_count_total",
    "inferno_cache_miss_count_total",
]


@pytest.fixture(scope="module")
def server(model_repository: Path) -> Iterator[Server]:
    with running(model_repository, cache_bytes=2**20) as s:
        yield s


def test_metrics_are_prometheus_text_labelled_by_model_and_version(server: Server) -> None:
    response = server.request("GET", "/metrics")
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = server.metrics()  # parsed by prometheus_client's own parser
    for labels, http in ((DIGITS, HTTP_DIGITS), (MINILM, HTTP_MINILM)):
        for name in [*COUNTERS, "inferno_queue_depth", "inferno_batch_size_count"]:
            assert f"{name}{labels}" in samples, (name, labels)
        for name in ("inferno_request_success_total", "inferno_request_duration_seconds_count",
                     "inferno_request_duration_seconds_sum"):
            assert f"{name}{http}" in samples, (name, http)
        assert f'inferno_request_duration_seconds_bucket{{le="+Inf",{http[1:]}' in samples
    assert samples['inferno_model_info{model="digits",precision="fp32",provider="CPUExecutionProvider",'
                   'runtime="onnxruntime",version="1"}'] == 1
    for name in ("inferno_request_success_total", "inferno_request_duration_seconds"):
        assert f"# HELP {name}" in response.text
    assert "# TYPE inferno_request_duration_seconds histogram" in response.text
    assert "# TYPE inferno_queue_depth gauge" in response.text


def test_counters_increase_with_requests(server: Server) -> None:
    before = server.metrics()
    client = server.client()
    client.infer("digits", digits_inputs(digits_pixels(3, seed=5), binary=True))
    client.infer("digits", digits_inputs(digits_pixels(2, seed=6)))
    client.infer("minilm", text_inputs(["metrics count this"]))
    client.infer("minilm", text_inputs(["metrics count this"]))  # the cache answers
    refused = server.request("POST", "/v2/models/digits/infer", b'{"inputs": []}')
    assert refused.status == 400
    after = server.metrics()

    def delta(name: str, labels: str) -> float:
        return after[f"{name}{labels}"] - before.get(f"{name}{labels}", 0.0)

    assert delta("inferno_request_success_total", HTTP_DIGITS) == 2
    assert delta("inferno_inference_count_total", DIGITS) == 5
    assert delta("inferno_inference_exec_count_total", DIGITS) == 2
    assert delta("inferno_inference_compute_duration_us_total", DIGITS) > 0
    assert delta("inferno_inference_queue_duration_us_total", DIGITS) >= 0
    assert delta("inferno_request_duration_seconds_count", HTTP_DIGITS) == 2
    assert delta("inferno_request_duration_seconds_sum", HTTP_DIGITS) > 0
    assert delta('inferno_request_duration_seconds_bucket', '{le="+Inf",model="digits",protocol="http",version="1"}') == 2
    assert delta("inferno_batch_size_count", DIGITS) == 2
    assert delta("inferno_batch_size_sum", DIGITS) == 5
    assert delta('inferno_request_failure_total', '{model="digits",protocol="http",reason="rejected",version="1"}') == 1
    assert delta("inferno_request_success_total", HTTP_MINILM) == 2
    assert delta("inferno_cache_miss_count_total", MINILM) == 1
    assert delta("inferno_cache_hit_count_total", MINILM) == 1
    assert delta("inferno_inference_exec_count_total", MINILM) == 1
    assert after[f"inferno_queue_depth{DIGITS}"] == 0


def test_openapi_document(server: Server) -> None:
    response = server.request("GET", "/openapi.json")
    assert response.status == 200 and response.headers["content-type"] == "application/json"
    doc = json.loads(response.body)
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    assert "post" in paths["/v2/models/{model}/infer"]
    assert "post" in paths["/v2/models/{model}/versions/{version}/infer"]
    for path in ("/v2/health/live", "/v2/health/ready", "/v2", "/metrics", "/v2/repository/index"):
        assert path in paths, path
