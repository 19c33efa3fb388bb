"""A small local v2 server in front of the cloud: the cascade behind the Open Inference Protocol.

Routes: ``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``, ``/v2/models/{name}`` (metadata),
``/v2/models/{name}/ready``, ``POST /v2/models/{name}/infer`` (JSON and binary tensors, the
classification extension), and ``GET /metrics`` (request and row counters). Infer answers
carry the merged probabilities and the parameters ``cascade_edge_rows`` and
``cascade_cloud_rows``. A bad request is a 4xx ``{"error": ...}`` naming the input; a cloud
that fails is a 502 naming it; the server keeps serving either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import importlib.util
import logging
import threading
import time
from collections import Counter
from types import TracebackType
from typing import Any

import numpy as np
import orjson
import uvicorn

from inferno._version import __version__
from inferno.edge.cascade import Cascade
from inferno.edge.cloud import CloudClient
from inferno.errors import (
    CloudError,
    DataMismatchError,
    InfernoError,
    UserInputError,
)
from inferno.serving.app import ClientDisconnected, Receive, Reply, Scope, Send, read_body
from inferno.serving.pipelines import top_k
from inferno.serving.protocol import (
    HEADER_LENGTH,
    InferRequest,
    OutputTensor,
    datatype_of,
    encode_infer_response,
    error_body,
    parse_infer_request,
)
from inferno.serving.server import bind

log = logging.getLogger(__name__)

VERSION = "1"
MAX_BODY_BYTES = 64 * 2**20
_JSON = (b"content-type", b"application/json")


class _NotFound(UserInputError):
    http_status = 404


class _MethodNotAllowed(UserInputError):
    http_status = 405


class CascadeApp:
    """The ASGI app serving ``cascade`` as model ``name``; ``counts`` holds its counters."""

    def __init__(self, cascade: Cascade, name: str) -> None:
        self.cascade = cascade
        self.name = name
        self.counts: Counter[str] = Counter()
        edge = cascade.edge
        self._inputs: list[dict[str, Any]] = [{"name": t.name, "datatype": datatype_of(t.dtype),
                         "shape": [d if isinstance(d, int) else -1 for d in t.shape]} for t in edge.signature.inputs]
        self._metadata = orjson.dumps({
            "name": name, "versions": [VERSION], "platform": "inferno_cascade",
            "inputs": self._inputs,
            "outputs": [{"name": edge.output, "datatype": "FP32", "shape": [-1, edge.classes]}],
            "parameters": {"threshold": cascade.threshold, "rule": cascade.rule, "edge": edge.name,
                           "cloud": getattr(cascade.cloud, "url", None), "task": "classification"},
        })

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        try:
            status, body, headers = await self._route(scope, receive)
        except ClientDisconnected:
            return
        except InfernoError as exc:
            self._count_failure(exc)
            status, body, headers = exc.http_status, error_body(str(exc)), [_JSON]
        except Exception:
            self.counts["failures:internal"] += 1
            log.exception("cascade request %s %s failed", scope["method"], scope["path"])
            status, body, headers = 500, error_body("internal error; the cascade server's log has the details"), [_JSON]
        await send({"type": "http.response.start", "status": status,
                    "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def _count_failure(self, exc: InfernoError) -> None:
        if isinstance(exc, CloudError):
            self.counts["failures:cloud"] += 1
        elif isinstance(exc, (_NotFound, _MethodNotAllowed)):
            return
        else:
            self.counts["failures:input"] += 1

    async def _route(self, scope: Scope, receive: Receive) -> Reply:
        method, path = scope["method"], scope["path"]
        parts = path.strip("/").split("/")
        if parts in (["v2", "health", "live"], ["v2", "health", "ready"]):
            return _check(method, "GET", (200, b"", [_JSON]))
        if parts == ["v2"]:
            doc = {"name": "inferno-cascade", "version": __version__, "extensions": ["binary_tensor_data",
                                                                                      "classification"]}
            return _check(method, "GET", (200, orjson.dumps(doc), [_JSON]))
        if parts == ["metrics"]:
            return _check(method, "GET", (200, self.metrics().encode(), [(b"content-type", b"text/plain")]))
        if len(parts) >= 3 and parts[:2] == ["v2", "models"]:
            rest = parts[3:]
            if len(rest) >= 2 and rest[0] == "versions":
                if rest[1] != VERSION:
                    raise _NotFound(f"model {parts[2]!r} version {rest[1]!r}: expected version {VERSION}")
                rest = rest[2:]
            self._model(parts[2])
            if rest == []:
                return _check(method, "GET", (200, self._metadata, [_JSON]))
            if rest == ["ready"]:
                return _check(method, "GET", (200, b"", [_JSON]))
            if rest == ["infer"]:
                _check(method, "POST", None)
                return await self._infer(scope, receive)
        raise _NotFound(f"path {path!r}: no such endpoint on the cascade server")

    def _model(self, name: str) -> None:
        if name != self.name:
            raise _NotFound(f"model {name!r}: this cascade serves {self.name!r}")

    async def _infer(self, scope: Scope, receive: Receive) -> Reply:
        headers = {k.decode().lower(): v.decode("latin-1") for k, v in scope["headers"]}
        body = await read_body(receive, headers, MAX_BODY_BYTES)
        self.counts["requests"] += 1
        request = parse_infer_request(body, headers.get(HEADER_LENGTH))
        feeds = self._feeds(request)
        outputs = self._requested(request)
        result = await asyncio.to_thread(self.cascade.predict, feeds)
        self.counts["rows:edge"] += result.edge_rows
        self.counts["rows:cloud"] += result.cloud_rows
        self.counts["requests:forwarded"] += int(result.cloud_rows > 0)
        probs = result.probabilities.astype(np.float32, copy=False)
        tensors = [OutputTensor(name, top_k(probs, k) if k else probs, binary) for name, binary, k in outputs]
        payload, extra = encode_infer_response(self.name, VERSION, tensors, request.id)
        payload, extra = _with_parameters(payload, extra, {"cascade_edge_rows": result.edge_rows,
                                                           "cascade_cloud_rows": result.cloud_rows})
        kind = b"application/octet-stream" if extra else b"application/json"
        return 200, payload, [(b"content-type", kind), *((k.encode(), v.encode()) for k, v in extra.items())]

    def _feeds(self, request: InferRequest) -> dict[str, np.ndarray]:
        expected: dict[str, dict[str, Any]] = {t["name"]: t for t in self._inputs}
        if set(request.inputs) != set(expected):
            raise DataMismatchError(f"inputs: expected {sorted(expected)}, got {sorted(request.inputs)}")
        feeds = {}
        for name, tensor in request.inputs.items():
            spec = expected[name]
            fits = tensor.datatype == spec["datatype"] and len(tensor.shape) == len(spec["shape"]) and all(
                d == -1 or d == s for d, s in zip(spec["shape"], tensor.shape, strict=True))
            if not fits:
                raise DataMismatchError(f"input {name!r}: expected {spec['datatype']} {spec['shape']}, "
                                        f"got {tensor.datatype} {list(tensor.shape)}")
            feeds[name] = tensor.data
        rows = {name: len(array) for name, array in feeds.items()}
        if len(set(rows.values())) > 1 or 0 in rows.values():
            raise DataMismatchError(f"inputs: expected the same number of rows (at least 1) in each, got {rows}")
        return feeds

    def _requested(self, request: InferRequest) -> list[tuple[str, bool, int]]:
        output = self.cascade.edge.output
        if request.outputs is None:
            return [(output, request.binary_output, 0)]
        for out in request.outputs:
            if out.name != output:
                raise UserInputError(f"output {out.name!r}: expected {output!r}, got an unknown name")
        return [(out.name, out.binary, out.classification) for out in request.outputs]

    def metrics(self) -> str:
        """The counters in Prometheus text format."""
        label = f'model="{self.name}"'
        c = self.counts
        lines = [
            "# HELP inferno_cascade_requests_total Infer requests received.",
            "# TYPE inferno_cascade_requests_total counter",
            f"inferno_cascade_requests_total{{{label}}} {c['requests']}",
            "# HELP inferno_cascade_forwarded_requests_total Requests with rows forwarded to the cloud.",
            "# TYPE inferno_cascade_forwarded_requests_total counter",
            f"inferno_cascade_forwarded_requests_total{{{label}}} {c['requests:forwarded']}",
            "# HELP inferno_cascade_rows_total Rows answered, by where they were answered.",
            "# TYPE inferno_cascade_rows_total counter",
            f'inferno_cascade_rows_total{{{label},answered_by="edge"}} {c["rows:edge"]}',
            f'inferno_cascade_rows_total{{{label},answered_by="cloud"}} {c["rows:cloud"]}',
            "# HELP inferno_cascade_failures_total Failed requests, by reason.",
            "# TYPE inferno_cascade_failures_total counter",
            *(f'inferno_cascade_failures_total{{{label},reason="{r}"}} {c["failures:" + r]}'
              for r in ("input", "cloud", "internal")),
        ]
        return "\n".join(lines) + "\n"


def _check(method: str, expected: str, reply: Reply | None) -> Reply:
    if method != expected:
        raise _MethodNotAllowed(f"method {method}: this endpoint takes {expected}")
    return reply or (200, b"", [])


def _with_parameters(payload: bytes, extra: dict[str, str], params: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    """Add response-level ``parameters`` to an encoded infer response (its JSON header only)."""
    length = int(extra.get(HEADER_LENGTH, len(payload)))
    doc = orjson.loads(payload[:length])
    doc["parameters"] = params
    header = orjson.dumps(doc)
    if HEADER_LENGTH in extra:
        return header + payload[length:], {**extra, HEADER_LENGTH: str(len(header))}
    return header, extra


def _uvicorn(app: CascadeApp, host: str, port: int) -> uvicorn.Server:
    config = uvicorn.Config(
        app, host=host, port=port, lifespan="on", access_log=False, log_level="warning",
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
    )
    return uvicorn.Server(config)


def serve_cascade(cascade: Cascade, name: str, host: str = "127.0.0.1", port: int = 8100) -> None:
    """Serve the cascade as model ``name`` until SIGINT/SIGTERM (blocking).

    Raises:
        ConfigError: the address cannot be listened on.
    """
    sock = bind(host, port)
    _uvicorn(CascadeApp(cascade, name), host, port).run(sockets=[sock])


class CascadeServer:
    """The cascade server in a background thread: ``with CascadeServer(cascade, "digits") as url:``.

    ``port=0`` picks a free port; entering waits until ``/v2/health/ready`` answers.
    """

    def __init__(self, cascade: Cascade, name: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = CascadeApp(cascade, name)
        self.host = host
        self._sock = bind(host, port)
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        self._server = _uvicorn(self.app, host, self.port)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name="inferno-cascade", daemon=True)

    def __enter__(self) -> str:
        self._thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self._thread.is_alive():
            probe = http.client.HTTPConnection(self.host, self.port, timeout=2)
            with contextlib.suppress(OSError):
                probe.request("GET", "/v2/health/ready")
                if probe.getresponse().status == 200:
                    probe.close()
                    return self.url
            probe.close()
            time.sleep(0.05)
        self.__exit__(None, None, None)
        raise InfernoError(f"the cascade server on {self.url} did not become ready")

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        with contextlib.suppress(OSError):
            self._sock.close()
        if isinstance(self.app.cascade.cloud, CloudClient):
            self.app.cascade.cloud.close()
