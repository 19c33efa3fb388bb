"""Helpers of the serving end-to-end tests: servers in a thread, raw HTTP, metrics, requests."""

from __future__ import annotations

import contextlib
import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families

from inferno.serving import ModelServeConfig, ServeConfig, ServerThread
from inferno.serving.app import InfernoApp
from inferno.serving.manager import ModelManager
from inferno.serving.served import RunnerFactory

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Hi",
    "Serving embeddings over the Open Inference Protocol, batched dynamically with other requests of different lengths.",
    "naïve café — ünïcödé ✓",
]


@dataclass
class Server:
    thread: ServerThread

    @property
    def url(self) -> str:
        return self.thread.url

    @property
    def address(self) -> str:
        """host:port, as tritonclient takes it."""
        return f"{self.thread.config.host}:{self.thread.port}"

    @property
    def manager(self) -> ModelManager:
        return self.thread.app.manager

    def client(self, **kwargs: Any) -> httpclient.InferenceServerClient:
        return httpclient.InferenceServerClient(self.address, **kwargs)

    def request(self, method: str, path: str, body: bytes | str | None = None,
                headers: dict[str, str] | None = None, timeout: float = 30) -> Response:
        """One raw HTTP request on a fresh connection."""
        return raw_request(self.thread.config.host, self.thread.port, method, path, body, headers, timeout)

    def metrics(self) -> dict[str, float]:
        response = self.request("GET", "/metrics", headers=self.auth)
        assert response.status == 200, response.body
        return parse_metrics(response.text)

    @property
    def auth(self) -> dict[str, str]:
        token = self.thread.config.token
        return {"Authorization": f"Bearer {token}"} if token else {}


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return json.loads(self.body)

    def error(self) -> str:
        """The error message of a 4xx/5xx answer, checking its shape."""
        assert self.headers.get("content-type") == "application/json", self.headers
        doc = self.json()
        assert isinstance(doc, dict) and set(doc) == {"error"}, doc
        assert isinstance(doc["error"], str) and doc["error"], doc
        return doc["error"]


def raw_request(host: str, port: int, method: str, path: str, body: bytes | str | None = None,
                headers: dict[str, str] | None = None, timeout: float = 30) -> Response:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        reply = conn.getresponse()
        return Response(reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read())
    finally:
        conn.close()


@contextlib.contextmanager
def running(repo: Path, *, models: tuple[str, ...] = (), token: str | None = None,
            max_body_bytes: int = 64 * 2**20, server: dict[str, Any] | None = None,
            runners: RunnerFactory | None = None, **settings: Any) -> Iterator[Server]:
    """A server on ``repo``; ``settings`` are the models' ModelServeConfig fields, ``server``
    more ServeConfig fields, ``runners`` where versions run (default: in the server)."""
    config = ServeConfig(repository=repo, port=0, models=models, token=token, max_body_bytes=max_body_bytes,
                         graceful_timeout_s=10, defaults=ModelServeConfig(**settings), **(server or {}))
    app = None if runners is None else InfernoApp(config, runners=runners)
    thread = ServerThread(config, ready_timeout_s=60, app=app)
    with thread:
        yield Server(thread)


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text → {'name{label="value",...}': value}, labels sorted; parsed by prometheus_client."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


# -- requests ------------------------------------------------------------------------------------


def digits_pixels(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((rows, 1, 8, 8), dtype=np.float32) * 16


def digits_inputs(pixels: np.ndarray, binary: bool = False) -> list[httpclient.InferInput]:
    tensor = httpclient.InferInput("pixels", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels, binary_data=binary)
    return [tensor]


def text_inputs(sentences: list[str], binary: bool = False) -> list[httpclient.InferInput]:
    tensor = httpclient.InferInput("text", [len(sentences)], "BYTES")
    tensor.set_data_from_numpy(np.array([s.encode() for s in sentences], dtype=object), binary_data=binary)
    return [tensor]


def digits_json_body(rows: int = 1, seed: int = 0) -> bytes:
    pixels = digits_pixels(rows, seed)
    return json.dumps({"inputs": [{"name": "pixels", "shape": list(pixels.shape), "datatype": "FP32",
                                   "data": pixels.reshape(-1).tolist()}]}).encode()


def assert_good_request(server: Server) -> None:
    """The server still answers a valid request correctly (after whatever a test threw at it)."""
    response = server.request("POST", "/v2/models/digits/infer", digits_json_body(2),
                              {"Content-Type": "application/json", **server.auth})
    assert response.status == 200, response.body
    out = response.json()["outputs"][0]
    assert out["name"] == "probabilities" and out["shape"] == [2, 10]
    assert np.allclose(np.asarray(out["data"]).reshape(2, 10).sum(1), 1.0, atol=1e-4)
