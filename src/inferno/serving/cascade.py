"""The edge↔cloud cascade as a model of ``inferno serve``'s app (``inferno cascade --serve``).

Which way the layers meet: ``serving`` and ``edge`` are on the same level, so neither imports
the other. The handler interface lives here, in serving's own terms: a :class:`Router` has the
edge's input specs (the models layer's ``TensorSpec``), its output and class count, and
``predict`` over a batch. The decision itself (confidence, threshold, which rows go to the
cloud, the cloud client) stays in ``inferno.edge.cascade``, whose ``Cascade`` is a ``Router``;
the CLI, above both, plugs one into the other with :func:`cascade_app`. The cascade is then
served by the same routes, error map (Retry-After, WWW-Authenticate), Prometheus registry,
uvicorn settings and ``ServerThread`` as any repository model, attached to the manager as
version 1 of its model.

Each request runs the cascade alone, in a worker thread: the rows it forwards reach the cloud
in one request of at most as many rows as the client sent, so the cloud's batch limit is the
client's, not that of several requests merged. The answer holds the merged probabilities (or
their top classes) and the response parameters ``cascade_edge_rows`` and
``cascade_cloud_rows``; a cloud that fails is a 502 naming it, and the server keeps serving.

Beside every model's ``inferno_request_*`` series: ``inferno_cascade_requests_total``,
``inferno_cascade_forwarded_requests_total``, ``inferno_cascade_rows_total{answered_by}``
(edge, cloud) and ``inferno_cascade_failures_total{reason}`` (input, cloud, internal).
"""

from __future__ import annotations

import asyncio
import os
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from prometheus_client import CollectorRegistry, Counter

from inferno.errors import CloudError, InfernoError
from inferno.models.signature import TensorSpec
from inferno.monitoring.metrics import ServingMetrics, VersionMetrics
from inferno.protocol.datatypes import config_type
from inferno.serving.app import InfernoApp
from inferno.serving.config import ModelServeConfig, ServeConfig
from inferno.serving.pipelines import (
    Answer,
    TensorMeta,
    requested_outputs,
    tensor_feeds,
    tensor_meta,
    top_k,
)
from inferno.serving.protocol import InferRequest, OutputTensor
from inferno.serving.served import refuse_large_response
from inferno.serving.stats import VersionStats

if TYPE_CHECKING:
    from inferno.monitoring.monitor import Monitor

VERSION = "1"
PLATFORM = "inferno_cascade"
NO_REPOSITORY = Path(os.devnull)
"""The repository of a server that serves only the cascade: a path that holds no model
(``ServeConfig`` needs one; the cascade is attached, not loaded from it)."""
FAILURE_REASONS = ("input", "cloud", "internal")


class Routed(Protocol):
    """One batch through the cascade (``inferno.edge.cascade.CascadeResult``)."""

    @property
    def probabilities(self) -> np.ndarray:
        """``[rows, classes]``: the edge's where it was confident, the cloud's elsewhere."""
        ...

    @property
    def edge_rows(self) -> int: ...

    @property
    def cloud_rows(self) -> int: ...


class Router(Protocol):
    """What the server needs of a cascade (``inferno.edge.cascade.Cascade``)."""

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """The edge's inputs, rows on axis 0."""
        ...

    @property
    def output(self) -> str:
        """The name of the probabilities output."""
        ...

    @property
    def classes(self) -> int: ...

    def describe(self) -> dict[str, Any]:
        """The metadata's ``parameters`` (threshold, rule, edge, cloud, task)."""
        ...

    def predict(self, batch: dict[str, np.ndarray]) -> Routed:
        """Route one batch (blocking: the server calls it in a worker thread).

        Raises:
            DataMismatchError: the batch does not fit. CloudError: the cloud failed.
        """
        ...

    def close(self) -> None:
        """Free what the cascade holds (the cloud's connections)."""
        ...


@dataclass(frozen=True)
class _Counters:
    requests: Counter
    forwarded: Counter
    rows: Callable[[str], Counter]
    """By where the rows were answered: edge or cloud."""
    failures: Callable[[str], Counter]
    """By reason: input, cloud or internal."""


_FAMILIES: weakref.WeakKeyDictionary[CollectorRegistry, tuple[Counter, Counter, Counter, Counter]] = \
    weakref.WeakKeyDictionary()


def _counters(registry: CollectorRegistry, model: str) -> _Counters:
    """The cascade counters of ``model`` in a server's registry, every series at 0 from the start."""
    families = _FAMILIES.get(registry)
    if families is None:
        families = _FAMILIES[registry] = (
            Counter("inferno_cascade_requests", "Infer requests received.", ("model",), registry=registry),
            Counter("inferno_cascade_forwarded_requests", "Requests with rows forwarded to the cloud.", ("model",),
                    registry=registry),
            Counter("inferno_cascade_rows", "Rows answered, by where they were answered.",
                    ("model", "answered_by"), registry=registry),
            Counter("inferno_cascade_failures", "Failed requests, by reason.", ("model", "reason"), registry=registry),
        )
    requests, forwarded, rows, failures = families
    counters = _Counters(requests.labels(model), forwarded.labels(model),
                         lambda where: rows.labels(model, where), lambda reason: failures.labels(model, reason))
    for where in ("edge", "cloud"):
        counters.rows(where)
    for reason in FAILURE_REASONS:
        counters.failures(reason)
    return counters


class CascadeStats(VersionStats):
    """The version's statistics (Triton's and ``inferno_request_*``) and its cascade counters.

    Every request ends in one ``request_done`` or ``request_failed``, the routes' own refusals
    (a body that does not parse, a response too large) included: requests are counted there.
    """

    def __init__(self, metrics: VersionMetrics, counters: _Counters) -> None:
        super().__init__(metrics, ())
        self.counters = counters

    def ran(self, rows: int, seconds: float, routed: Routed) -> None:
        """A batch went through the cascade."""
        self.inference_count += rows
        self.execution_count += 1
        self.last_inference_ms = int(time.time() * 1000)
        self.metrics.inference_count.inc(rows)
        self.metrics.exec_count.inc()
        self.metrics.compute_us.inc(seconds * 1e6)
        self.counters.rows("edge").inc(routed.edge_rows)
        self.counters.rows("cloud").inc(routed.cloud_rows)
        if routed.cloud_rows:
            self.counters.forwarded.inc()

    def request_done(self, seconds: float) -> None:
        super().request_done(seconds)
        self.counters.requests.inc()

    def request_failed(self, seconds: float, reason: str, cause: str = "input") -> None:
        """As ``VersionStats``'; ``cause``: the cascade's reason (input, cloud or internal)."""
        super().request_failed(seconds, reason)
        self.counters.requests.inc()
        self.counters.failures(cause).inc()


class CascadeVersion:
    """``router`` served as version 1 of model ``name``: a ``serving.served.Served``."""

    version = VERSION
    queue_full = False
    """No queue: each request runs in its own worker thread."""
    queue_full_message = ""

    def __init__(self, name: str, router: Router, metrics: ServingMetrics, response_limit: int | None = None) -> None:
        self.name = name
        self.router = router
        self.response_limit = response_limit
        self.config = ModelServeConfig(drift=False, validation="off")
        self.monitor: Monitor | None = None
        self.inputs: tuple[TensorMeta, ...] = tuple(tensor_meta(s) for s in router.inputs)
        self.outputs = (TensorMeta(router.output, "FP32", (-1, router.classes)),)
        self._axes: dict[str, int | None] = {t.name: 0 for t in self.inputs}
        bound = metrics.bind(name, VERSION, runtime="cascade", provider="edge+cloud", precision="n/a",
                             queue_depth=lambda: 0)
        self.stats = CascadeStats(bound, _counters(metrics.registry, name))
        self.ready = True

    def admit(self, started: float) -> None:
        """Nothing to refuse early: there is no queue."""

    async def infer(self, request: InferRequest, started: float) -> Answer:
        """Check the request, route it, answer the merged probabilities (or their top classes)."""
        try:
            rows, feeds = tensor_feeds(self.inputs, self._axes, request)
            wanted = requested_outputs(self.outputs, request)
            t0 = time.perf_counter()
            routed = await asyncio.to_thread(self.router.predict, feeds)
        except CloudError:
            self.stats.request_failed(time.perf_counter() - started, "backend", "cloud")
            raise
        except InfernoError as exc:
            self.stats.request_failed(time.perf_counter() - started,
                                      "rejected" if exc.http_status < 500 else "backend")
            raise
        except Exception:
            self.stats.request_failed(time.perf_counter() - started, "backend", "internal")
            raise
        self.stats.ran(rows, time.perf_counter() - t0, routed)
        probabilities = routed.probabilities.astype(np.float32, copy=False)
        tensors = [OutputTensor(out.name, top_k(probabilities, out.classification) if out.classification
                                else probabilities, out.binary) for out in wanted]
        return Answer(tensors, {"cascade_edge_rows": routed.edge_rows, "cascade_cloud_rows": routed.cloud_rows})

    def check_response_size(self, size: int, started: float) -> None:
        refuse_large_response(self.stats, self.response_limit, size, started)

    def metadata(self, versions: list[str]) -> dict[str, Any]:
        return {"name": self.name, "versions": versions, "platform": PLATFORM,
                "inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs],
                "parameters": self.router.describe()}

    def model_config(self) -> dict[str, Any]:
        """Triton's model configuration shape: no server-side batching (``max_batch_size`` 0)."""
        def tensors(metas: tuple[TensorMeta, ...]) -> list[dict[str, Any]]:
            return [{"name": t.name, "data_type": config_type(t.datatype), "dims": list(t.shape)} for t in metas]

        return {"name": self.name, "platform": PLATFORM, "max_batch_size": 0, "input": tensors(self.inputs),
                "output": tensors(self.outputs), "instance_group": [{"count": 1, "kind": "KIND_CPU"}]}

    async def close(self) -> None:
        self.ready = False
        await asyncio.to_thread(self.router.close)


def cascade_config(host: str = "127.0.0.1", port: int = 8100) -> ServeConfig:
    """The settings of a server that serves only a cascade (``inferno serve``'s defaults otherwise)."""
    return ServeConfig(repository=NO_REPOSITORY, host=host, port=port)


def cascade_app(router: Router, name: str, config: ServeConfig) -> InfernoApp:
    """``inferno serve``'s app with ``router`` attached as model ``name``.

    Raises:
        UserInputError: ``name`` is not a valid model name.
    """
    app = InfernoApp(config)
    app.manager.attach(CascadeVersion(name, router, app.metrics, config.response_limit))
    return app
