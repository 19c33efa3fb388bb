"""The cascade as a model of ``inferno serve``'s app, with a stand-in router (no edge session,
no cloud): the routes, the shared input checks, the response parameters, the counters, and an
attached model that cannot be loaded or unloaded. The real edge and cloud are in
tests/e2e/test_cascade.py."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from inferno.errors import CloudError, DataMismatchError
from inferno.models.signature import TensorSpec
from inferno.serving.app import InfernoApp
from inferno.serving.cascade import cascade_app, cascade_config

CLASSES = 3


@dataclass(frozen=True)
class Routed:
    probabilities: np.ndarray
    on_edge: np.ndarray

    @property
    def edge_rows(self) -> int:
        return int(self.on_edge.sum())

    @property
    def cloud_rows(self) -> int:
        return int((~self.on_edge).sum())


class FakeRouter:
    """Rows whose first value is positive stay on the edge; ``fail`` makes predict raise it."""

    inputs = (TensorSpec("x", "float32", ("batch", 2)),)
    output = "probabilities"
    classes = CLASSES

    def __init__(self) -> None:
        self.fail: Exception | None = None
        self.closed = False

    def describe(self) -> dict[str, Any]:
        return {"threshold": 0.5, "rule": "top", "edge": "fake", "cloud": "http://cloud", "task": "classification"}

    def predict(self, batch: dict[str, np.ndarray]) -> Routed:
        if self.fail is not None:
            raise self.fail
        x = batch["x"]
        probs = np.tile(np.array([0.7, 0.2, 0.1], dtype=np.float32), (len(x), 1))
        return Routed(probs, x[:, 0] > 0)

    def close(self) -> None:
        self.closed = True


async def call(app: InfernoApp, method: str, path: str, body: Any = None) -> tuple[int, dict[str, str], bytes]:
    raw = b"" if body is None else json.dumps(body).encode()
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": raw, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path,
             "headers": [(b"content-length", str(len(raw)).encode())]}
    await app(scope, receive, send)
    headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    return sent[0]["status"], headers, sent[1]["body"]


def infer_body(x: list[list[float]], **outputs: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [len(x), 2],
                                        "data": [v for row in x for v in row]}]}
    if outputs:
        body["outputs"] = [{"name": "probabilities", "parameters": outputs}]
    return body


def metrics(app: InfernoApp) -> dict[str, float]:
    found = {}
    for family in text_string_to_metric_families(app.metrics.render().decode()):
        for s in family.samples:
            if s.name.startswith("inferno_cascade"):
                found[s.name + json.dumps(dict(sorted(s.labels.items())))] = s.value
    return found


def key(name: str, **labels: str) -> str:
    return name + json.dumps(dict(sorted({"model": "m", **labels}.items())))


@pytest.fixture
def router() -> FakeRouter:
    return FakeRouter()


@pytest.fixture
def app(router: FakeRouter) -> InfernoApp:
    return cascade_app(router, "m", cascade_config("127.0.0.1", 0))


def test_infer_answers_the_probabilities_and_the_rows_on_each_side(app: InfernoApp) -> None:
    async def scenario() -> None:
        status, _, body = await call(app, "POST", "/v2/models/m/infer", infer_body([[1, 0], [-1, 0], [2, 0]]))
        assert status == 200, body
        doc = json.loads(body)
        assert doc["parameters"] == {"cascade_edge_rows": 2, "cascade_cloud_rows": 1}
        assert doc["outputs"][0]["shape"] == [3, CLASSES]
        status, _, body = await call(app, "POST", "/v2/models/m/infer", infer_body([[1, 0]], classification=1))
        assert status == 200 and json.loads(body)["outputs"][0]["data"] == ["0.700000:0"]

    asyncio.run(scenario())
    found = metrics(app)
    assert found[key("inferno_cascade_requests_total")] == 2
    assert found[key("inferno_cascade_forwarded_requests_total")] == 1
    assert found[key("inferno_cascade_rows_total", answered_by="edge")] == 3
    assert found[key("inferno_cascade_rows_total", answered_by="cloud")] == 1


def test_bad_inputs_are_400_naming_them_and_counted_as_input_failures(app: InfernoApp) -> None:
    async def scenario() -> None:
        bad = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
        status, _, body = await call(app, "POST", "/v2/models/m/infer", bad)
        assert status == 400 and "input 'x': expected FP32 [-1, 2], got FP32 [1, 3]" in json.loads(body)["error"]
        status, _, body = await call(app, "POST", "/v2/models/m/infer", {"inputs": "nope"})
        assert status == 400
        wrong = {**infer_body([[1, 0]]), "outputs": [{"name": "labels"}]}
        status, _, body = await call(app, "POST", "/v2/models/m/infer", wrong)
        assert status == 400 and "output 'labels'" in json.loads(body)["error"]

    asyncio.run(scenario())
    found = metrics(app)
    assert found[key("inferno_cascade_failures_total", reason="input")] == 3
    assert found[key("inferno_cascade_requests_total")] == 3
    assert found[key("inferno_cascade_failures_total", reason="cloud")] == 0


@pytest.mark.parametrize(("error", "status", "reason"), [
    (CloudError("cannot reach the cloud at http://cloud", "http://cloud", None), 502, "cloud"),
    (DataMismatchError("input 'x': no"), 400, "input"),
    (RuntimeError("boom"), 500, "internal"),
])
def test_failures_are_mapped_and_counted_by_reason(app: InfernoApp, router: FakeRouter, error: Exception,
                                                   status: int, reason: str) -> None:
    router.fail = error

    async def scenario() -> tuple[int, bytes]:
        got, _, body = await call(app, "POST", "/v2/models/m/infer", infer_body([[1, 0]]))
        return got, body

    got, body = asyncio.run(scenario())
    assert got == status
    if status == 502:
        assert "cannot reach the cloud at http://cloud" in json.loads(body)["error"]
    assert metrics(app)[key("inferno_cascade_failures_total", reason=reason)] == 1


def test_metadata_config_and_an_attached_model_that_cannot_be_unloaded(app: InfernoApp, router: FakeRouter) -> None:
    async def scenario() -> None:
        status, _, body = await call(app, "GET", "/v2/models/m")
        meta = json.loads(body)
        assert status == 200 and meta["platform"] == "inferno_cascade" and meta["parameters"] == router.describe()
        assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}]
        assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, CLASSES]}]
        status, _, body = await call(app, "GET", "/v2/models/m/config")
        assert status == 200 and json.loads(body)["max_batch_size"] == 0
        for action in ("load", "unload"):
            status, _, body = await call(app, "POST", f"/v2/repository/models/m/{action}", {})
            assert status == 400 and "attached" in json.loads(body)["error"]
        status, _, _ = await call(app, "GET", "/v2/models/m/versions/2")
        assert status == 404
        status, headers, _ = await call(app, "GET", "/v2/models/m/infer")
        assert status == 405 and headers["allow"] == "POST"
        await app.shutdown()

    asyncio.run(scenario())
    assert router.closed
