"""The ASGI app: Open Inference Protocol v2 routes over a :class:`ModelManager`.

Written against ASGI directly rather than a framework: a served request costs one path
split and one dict of the headers it needs, which matters when one core both parses
requests and runs the model; and the body limit is enforced while reading, before a large
body is held in memory. The exchange itself (headers, body, the one error → status map) is
``serving.exchange``; the models behind the routes are the manager's, from the repository or
attached by the caller (the cascade, ``serving.cascade``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import logging
import time
import weakref
from typing import Any

import orjson

from inferno import repository
from inferno._version import __version__
from inferno.errors import (
    InfernoError,
    MissingExtraError,
    ServiceUnavailableError,
    UnauthorizedError,
    UnknownModelError,
    UserInputError,
)
from inferno.monitoring.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from inferno.monitoring.metrics import PROTOCOLS, ServingMetrics
from inferno.monitoring.profile import PROFILE_FILE
from inferno.protocol.codec import error_body
from inferno.serving.config import ServeConfig
from inferno.serving.exchange import (
    JSON,
    ClientDisconnected,
    Exchange,
    MethodNotAllowed,
    NotFound,
    Receive,
    Reply,
    Scope,
    Send,
    error_reply,
    read_body,
    with_parameters,
)
from inferno.serving.manager import (
    CANONICAL_VERSION,
    ModelManager,
    ModelUnavailableError,
)
from inferno.serving.openapi import openapi
from inferno.serving.protocol import encode_infer_response, json_object, parse_infer_request
from inferno.serving.served import RunnerFactory, Served, local_runners
from inferno.serving.transport import frame

log = logging.getLogger(__name__)

EXTENSIONS = ["binary_tensor_data", "classification", "model_repository", "model_configuration", "statistics"]
_LIVE = orjson.dumps({"live": True})
_READY = {True: orjson.dumps({"ready": True}), False: orjson.dumps({"ready": False})}


class InfernoApp:
    """The server application; ``manager`` holds the models, ``metrics`` their counters."""

    extensions = EXTENSIONS

    def __init__(self, config: ServeConfig, *, runners: RunnerFactory = local_runners) -> None:
        self.config = config
        self.startup_error: InfernoError | None = None
        self.grpc_port: int | None = None
        """The port gRPC listens on once started (``config.grpc_port`` 0 picks one); None: off."""
        self._grpc: Any = None
        self._grpc_stopping: asyncio.Future[None] | None = None
        self.metrics = ServingMetrics(PROTOCOLS if config.grpc_port is not None else ("http",))
        self.manager = ModelManager(config, self.metrics, runners)
        self.ready = False
        self._startup: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._openapi = orjson.dumps(openapi(__version__))
        self._early: weakref.WeakKeyDictionary[Served, tuple[bytes, bytes]] = weakref.WeakKeyDictionary()
        repo = config.repository
        # longest first: the resolved path may contain the given one (or the reverse)
        self._roots = sorted({str(repo.resolve()), str(repo.absolute()), str(repo)} - {"", "."}, key=len,
                             reverse=True)

    # -- lifecycle -----------------------------------------------------------------------------

    async def startup(self) -> None:
        """Load the configured models, then mark the server ready (runs in the background).

        A model that fails to load does not take the others down: it is UNAVAILABLE in the
        repository index, with the reason, and its requests answer that reason. The server
        is ready once startup is over and at least one model loaded (or there was none to
        load): Triton's ``--exit-on-error=false --strict-readiness=false``, so a load balancer
        keeps routing to the models that work. ``strict_readiness`` asks for every model,
        Triton's default.
        """
        names = list(self.config.models) or sorted(repository.models(self.config.repository, trust=self.config.trust))
        for name in names:
            try:
                await self.manager.load(name)
            except InfernoError as exc:
                log.error("model %s failed to load: %s", name, exc)
        loaded = [name for name in names if name in self.manager.loaded()]
        if len(loaded) < len(names):
            log.error("serving %d of %d models; unavailable: %s (POST /v2/repository/index has the reasons)",
                      len(loaded), len(names), sorted(set(names) - set(loaded)))
        self.ready = len(loaded) == len(names) or (bool(loaded) and not self.config.strict_readiness)

    async def start_grpc(self) -> None:
        """Triton's gRPC service beside HTTP, when ``grpc_port`` is set (before models load, so
        that its health RPCs answer during startup as HTTP's do)."""
        if self.config.grpc_port is None or self._grpc is not None:
            return
        # the [grpc] extra: imported only when asked for
        try:
            from inferno.serving import grpc_service
        except ImportError as exc:
            raise MissingExtraError(exc.name or "grpcio", "grpc", "--grpc-port") from None
        # a request as large as an HTTP body may be; a response as large as the budget that
        # check_response_size enforces, with its own message, before grpc's limit would
        self._grpc, self.grpc_port = await grpc_service.start(
            self, self.config.host, self.config.grpc_port,
            max_receive_bytes=self.config.max_body_bytes, max_send_bytes=self.config.response_limit)

    def begin_shutdown(self) -> None:
        """Stop taking new requests on gRPC at the moment HTTP stops accepting connections
        (the server calls this first); in-flight RPCs have the graceful timeout to finish."""
        self.ready = False
        if self._grpc is not None and self._grpc_stopping is None:
            self._grpc_stopping = asyncio.ensure_future(self._grpc.stop(self.config.graceful_timeout_s))

    async def shutdown(self) -> None:
        """Finish accepted requests, then free the models."""
        self.begin_shutdown()
        if self._startup is not None and not self._startup.done():
            self._startup.cancel()
        if self._grpc_stopping is not None:  # its in-flight RPCs drained, as uvicorn did for HTTP
            await self._grpc_stopping
        await self.manager.close()

    # -- ASGI ----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        exchange = Exchange(scope, receive)
        try:
            status, body, headers = await self._route(scope["path"], exchange)
        except ClientDisconnected:
            return
        except InfernoError as exc:
            status, body, headers = error_reply(exc, self.public(str(exc)))
        except Exception:
            status = 500
            body = error_body(self.internal_error(f"{exchange.method} {scope['path']}"))
            headers = [JSON]
        await send({"type": "http.response.start", "status": status,
                    "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def early_answer(self, method: bytes, url: bytes, headers: list[tuple[bytes, bytes]]) -> tuple[bytes, bytes] | None:
        """The answer to an infer request whose model's queue is full, from its request line
        and headers alone (the transport calls this before the body is read); None for
        anything else, which the routes then handle as usual.

        Only what is certain is answered here: a plain ``/v2/models/M[/versions/V]/infer``
        path, an authorized request when the server has a token, a loaded model. The answer
        is the whole HTTP response, framed once per version (keep-alive, close): this is the
        path every refused request takes under overload, so it builds nothing per request.
        """
        if method != b"POST" or not url.endswith(b"/infer") or b"%" in url or b"?" in url:
            return None
        parts = url.decode("latin-1").split("/")
        if len(parts) == 5 and parts[:3] == ["", "v2", "models"]:
            version = None
        elif len(parts) == 7 and parts[:3] == ["", "v2", "models"] and parts[4] == "versions":
            if not CANONICAL_VERSION.fullmatch(parts[5]):
                return None
            version = parts[5]
        else:
            return None
        if self.config.token is not None:
            given = [v for k, v in headers if k == b"authorization"]
            if len(given) != 1 or not hmac.compare_digest(given[0], f"Bearer {self.config.token}".encode()):
                return None
        try:
            served = self.manager.get(parts[3], version)
        except InfernoError:
            return None
        if not served.queue_full:
            return None
        served.stats.request_failed(0.0, "rejected")
        answers = self._early.get(served)
        if answers is None:
            body, headers_ = error_body(served.queue_full_message), [JSON, (b"retry-after", b"1")]
            answers = self._early[served] = (frame(503, body, headers_, True), frame(503, body, headers_, False))
        return answers

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start_grpc()
                except InfernoError as exc:  # uvicorn stops; serve() raises it
                    self.startup_error = exc
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                self._startup = asyncio.create_task(self.startup())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- routing -------------------------------------------------------------------------------

    async def _route(self, path: str, ex: Exchange) -> Reply:
        parts = path.strip("/").split("/")
        if parts[:2] == ["v2", "health"] and len(parts) == 3:
            self._method(ex, "GET")
            if parts[2] == "live":
                return 200, _LIVE, [JSON]
            if parts[2] == "ready":
                return (200 if self.ready else 503), _READY[self.ready], [JSON]
        if "" in parts and parts != [""]:
            raise NotFound(f"path {path!r}: expected no empty segment ('//'); /openapi.json lists the endpoints")
        if ex.duplicated is not None:
            raise UserInputError(f"header {ex.duplicated!r}: expected it once, got it more than once")
        self._authorize(ex)
        if parts == ["v2"]:
            self._method(ex, "GET")
            return _json({"name": "inferno", "version": __version__, "extensions": EXTENSIONS})
        if len(parts) >= 3 and parts[:2] == ["v2", "models"]:
            return await self._model_route(parts[2], parts[3:], ex)
        if len(parts) >= 3 and parts[:2] == ["v2", "repository"]:
            return await self._repository_route(parts[2:], ex)
        if parts == ["metrics"]:
            self._method(ex, "GET")
            return 200, self.metrics.render(), [(b"content-type", METRICS_CONTENT_TYPE.encode())]
        if parts == ["openapi.json"]:
            self._method(ex, "GET")
            return 200, self._openapi, [JSON]
        raise NotFound(f"path {path!r}: no such endpoint; /openapi.json lists them")

    async def _model_route(self, model: str, rest: list[str], ex: Exchange) -> Reply:
        if model == "stats" and not rest:
            self._method(ex, "GET")
            return _json({"model_stats": self.statistics(None, None)})
        version = None
        if len(rest) >= 2 and rest[0] == "versions":
            version, rest = rest[1], rest[2:]  # checked by the manager: one rule for HTTP and gRPC
        action = rest[0] if len(rest) == 1 else ("" if not rest else None)
        if action == "infer":
            self._method(ex, "POST")
            return await self._infer(model, version, ex)
        if action not in ("", "ready", "config", "stats", "drift"):
            raise NotFound(f"model endpoint {'/'.join(rest)!r}: expected infer, ready, config, stats or drift")
        self._method(ex, "GET")
        if action == "":
            served = self.manager.get(model, version)
            return _json(served.metadata(self.manager.loaded()[model]))
        if action == "ready":
            try:
                ready = self.manager.get(model, version).ready
            except UnknownModelError:
                return 404, _READY[False], [JSON]
            except (ModelUnavailableError, ServiceUnavailableError):
                return 503, _READY[False], [JSON]
            return (200 if ready else 503), _READY[ready], [JSON]
        if action == "config":
            return _json(self.manager.get(model, version).model_config())
        if action == "drift":
            return _json(self._drift(model, version))
        return _json({"model_stats": self.statistics(model, version)})

    async def _infer(self, model: str, version: str | None, ex: Exchange) -> Reply:
        # Refuse what cannot be served before the body is read and parsed: under overload a
        # 503 must cost a small fraction of a served request, or rejections eat the capacity.
        self.manager.get(model, version).admit(ex.started)
        body = await self._body(ex)
        served: Served | None = None
        try:
            request = parse_infer_request(body, ex.headers.get("inference-header-content-length"))
            # no await between the lookup and the batcher's submit: see serving.models
            served = self.manager.get(model, version)
            outputs = await served.infer(request, ex.started)  # counts its own failures
        except UserInputError:
            if served is None:
                self._count_parse_failure(model, version, ex)
            raise
        try:
            payload, extra = encode_infer_response(model, served.version, outputs, request.id)
            if outputs.parameters:
                payload, extra = with_parameters(payload, extra, outputs.parameters)
        except UserInputError:  # a JSON output holding NaN/Inf
            served.stats.request_failed(time.perf_counter() - ex.started, "rejected")
            raise
        served.check_response_size(len(payload), ex.started)
        served.stats.request_done(time.perf_counter() - ex.started)
        if extra:
            return 200, payload, [(b"content-type", b"application/octet-stream"),
                                  *((k.encode(), v.encode()) for k, v in extra.items())]
        return 200, payload, [JSON]

    def _count_parse_failure(self, model: str, version: str | None, ex: Exchange) -> None:
        # an unknown model: the 404 is the answer, there is no version to count it against
        with contextlib.suppress(UnknownModelError, ModelUnavailableError):
            self.manager.get(model, version).stats.request_failed(time.perf_counter() - ex.started, "rejected")

    async def _repository_route(self, rest: list[str], ex: Exchange) -> Reply:
        self._method(ex, "POST")
        body = await self._body(ex)
        options = _json_object(body, "repository request")
        if rest == ["index"]:
            return _json(self.repository_index(ready_only=options.get("ready") is True))
        if len(rest) == 3 and rest[0] == "models" and rest[2] in ("load", "unload"):
            name = rest[1]
            params = options.get("parameters") or {}
            if not isinstance(params, dict):
                raise UserInputError(f"'parameters': expected an object, got {type(params).__name__}")
            if rest[2] == "load":
                unsupported = [k for k in params if k == "config" or k.startswith("file:")]
                if unsupported:
                    raise UserInputError(
                        f"load parameters {unsupported}: not supported; put settings in "
                        f"the repository's {name}/serve.json and load again"
                    )
                await self.manager.load(name)
            else:
                await self.manager.unload(name)
            return 200, b"", [JSON]
        raise NotFound(f"repository endpoint {'/'.join(rest)!r}: expected index, models/M/load or unload")

    # -- helpers -------------------------------------------------------------------------------

    def _drift(self, model: str, version: str | None) -> dict[str, Any]:
        served = self.manager.get(model, version)
        doc = served.monitor.document() if served.monitor is not None else None
        if doc is None:
            why = ("drift watching is off (drift: false)" if not served.config.drift
                   else f"it has no reference profile ({PROFILE_FILE}; `inferno accelerate` writes one)")
            raise NotFound(f"model {model!r} version {served.version}: no drift report: {why}")
        return doc

    def statistics(self, model: str | None, version: str | None) -> list[dict[str, Any]]:
        if model is not None and version is not None:
            served = self.manager.get(model, version)
            return [served.stats.to_triton(served.name, served.version)]
        loaded = self.manager.loaded()
        if model is not None and model not in loaded:
            self.manager.get(model)  # raises the 404
        names = [model] if model is not None else sorted(loaded)
        entries = []
        for name in names:
            for v in loaded.get(name, []):
                served = self.manager.get(name, v)
                entries.append(served.stats.to_triton(name, v))
        return entries

    def repository_index(self, ready_only: bool = False) -> list[dict[str, str]]:
        """Triton's repository index, reasons without file system paths."""
        rows = [{**r, "reason": self.public(r["reason"])} for r in self.manager.index()]
        return [r for r in rows if r["state"] == "READY"] if ready_only else rows

    def internal_error(self, what: str) -> str:
        """Log the exception being handled under a new request number; the message the client
        gets instead (either protocol): the number, no details."""
        request_id = next(self._ids)
        log.exception("request %s (%s) failed", request_id, what)
        return f"internal error (request {request_id}); the server log has the details"

    def public(self, message: str) -> str:
        """``message`` without this machine's file system paths: the repository's own path
        becomes "repository" (clients name models, not folders; the log keeps the paths)."""
        for root in self._roots:
            message = message.replace(root, "repository")
        return message

    def _authorize(self, ex: Exchange) -> None:
        token = self.config.token
        if token is None:
            return
        given = ex.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise UnauthorizedError("authorization: expected 'Bearer <token>' with the server's token, "
                                    + ("got a different one" if given else "got none"))

    @staticmethod
    def _method(ex: Exchange, expected: str) -> None:
        if ex.method != expected:
            raise MethodNotAllowed(f"method {ex.method}: this endpoint takes {expected}", expected)

    async def _body(self, ex: Exchange) -> bytes:
        return await read_body(ex.receive, ex.headers, self.config.max_body_bytes)


def _json(doc: Any) -> Reply:
    return 200, orjson.dumps(doc), [JSON]


def _json_object(body: bytes, where: str) -> dict[str, Any]:
    return json_object(body, where) if body.strip() else {}

