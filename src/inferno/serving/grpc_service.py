"""Triton's ``inference.GRPCInferenceService`` over the same models as HTTP (``--grpc-port``).

The wire contract is the one ``tritonclient[grpc]`` ships (its generated ``service_pb2`` and
``model_config_pb2``): no copied proto, so Triton's own clients take this server for Triton.
It runs on inferno's own HTTP/2 transport (:mod:`inferno.serving.grpc_transport`: grpc.aio
cost more per call than a whole HTTP request) in the HTTP server's event loop and goes through the same manager,
batchers, cache, statistics, limits and token; errors map to status codes in one place
(:data:`STATUS`), with the same messages as HTTP.

Tensors travel as ``raw_input_contents`` / ``raw_output_contents`` (what ``tritonclient.grpc``
sends and decodes); typed ``contents`` are accepted too, never mixed with raw in one request.

Limits as over HTTP: a request message over ``--max-body-mb`` is refused by the transport
(RESOURCE_EXHAUSTED, naming both sizes) before it is read; a full queue is UNAVAILABLE with
``retry-after`` in the trailing metadata; the client's deadline bounds the request as its
``timeout`` parameter does, and the server answers DEADLINE_EXCEEDED itself, a little before
the client gives up (:data:`DEADLINE_MARGIN`).
"""

from __future__ import annotations

import asyncio
import hmac
import math
import struct
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from inferno._version import __version__
from inferno.errors import ConfigError, InfernoError, ServiceUnavailableError, UserInputError
from inferno.protocol.codec import tensor_bytes
from inferno.protocol.datatypes import DATATYPES, datatype_of
from inferno.serving.grpc_call import Context, methods
from inferno.serving.grpc_transport import GrpcServer
from inferno.serving.protocol import InferRequest, input_tensor, requested_outputs
from inferno.serving.stats import PROTOCOL

if TYPE_CHECKING:
    from inferno.serving.app import InfernoApp

STATUS = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
          404: grpc.StatusCode.NOT_FOUND, 405: grpc.StatusCode.UNIMPLEMENTED,
          413: grpc.StatusCode.RESOURCE_EXHAUSTED, 500: grpc.StatusCode.INTERNAL,
          503: grpc.StatusCode.UNAVAILABLE, 504: grpc.StatusCode.DEADLINE_EXCEEDED}
"""HTTP status of an InfernoError → gRPC status code: the one map for this protocol."""



def _contents_field(datatype: str, dtype: np.dtype[Any]) -> str | None:
    """The ``InferTensorContents`` field of a datatype: 32-bit integer fields hold the smaller
    ones, FP16 (and BF16) have none and travel raw only."""
    if datatype == "BYTES":
        return "bytes_contents"
    if dtype.kind == "b":
        return "bool_contents"
    if dtype.kind in "iu":
        return f"{'u' if dtype.kind == 'u' else ''}int{'64' if dtype.itemsize == 8 else ''}_contents"
    return f"fp{8 * dtype.itemsize}_contents" if dtype.kind == "f" and dtype.itemsize >= 4 else None


_TYPED = {name: f for name, dtype in DATATYPES.items() if (f := _contents_field(name, dtype)) is not None}
"""Which ``InferTensorContents`` field carries a datatype, from the protocol's table."""

_UNSUPPORTED = ("SystemSharedMemoryStatus", "SystemSharedMemoryRegister", "SystemSharedMemoryUnregister",
                "CudaSharedMemoryStatus", "CudaSharedMemoryRegister", "CudaSharedMemoryUnregister",
                "TraceSetting", "LogSettings")


DEADLINE_MARGIN = (0.1, 0.02)
"""The server's deadline is the client's less this much (a fraction, at most these seconds):
a request dropped from the queue is then answered by the server with its reason, and counted,
before the client's own timer ends the call."""


class _Refusal(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def _parameter(p: Any) -> Any:
    kind = p.WhichOneof("parameter_choice")
    return getattr(p, kind) if kind else None


def infer_request(request: Any, deadline_s: float | None) -> InferRequest:
    """A ``ModelInferRequest`` as the protocol's :class:`InferRequest` (400s name the input).

    ``deadline_s``: the seconds the client's deadline leaves, if it set one; the request's
    timeout becomes the smaller of that (less :data:`DEADLINE_MARGIN`) and its ``timeout``.
    """
    raw = list(request.raw_input_contents)
    typed = [t.name for t in request.inputs if t.HasField("contents")]
    if raw and typed:
        raise UserInputError(f"input {typed[0]!r}: expected every input in raw_input_contents or every input "
                             "in typed contents, got typed contents and raw_input_contents in one request")
    if raw and len(raw) != len(request.inputs):
        raise UserInputError(f"raw_input_contents: expected one entry per input ({len(request.inputs)}), "
                             f"got {len(raw)}")
    inputs = {}
    for i, tensor in enumerate(request.inputs):
        parsed = (input_tensor(tensor.name, tensor.datatype, list(tensor.shape), raw=raw[i]) if raw
                  else _typed_input(tensor))
        if parsed.name in inputs:
            raise UserInputError(f"input {parsed.name!r}: expected unique input names, got it twice")
        inputs[parsed.name] = parsed
    if not inputs:
        raise UserInputError("inputs: expected a non-empty list of tensors, got none")
    params = {k: _parameter(v) for k, v in request.parameters.items()}
    outputs = requested_outputs([(o.name, _parameter(o.parameters["classification"])
                                  if "classification" in o.parameters else 0) for o in request.outputs])
    timeout = params.get("timeout")
    if timeout is not None and (not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 0):
        raise UserInputError(f"parameter 'timeout': expected microseconds (an integer >= 0), got {timeout!r}")
    if deadline_s is not None:  # the client's deadline bounds the request as its timeout does
        ours = int(max(0.0, deadline_s - _margin(deadline_s)) * 1e6)
        timeout = min(timeout, ours) if timeout is not None else ours
    return InferRequest(inputs, outputs, True, request.id or None, timeout, params)


def _margin(deadline_s: float) -> float:
    fraction, most = DEADLINE_MARGIN
    return min(most, max(0.0, deadline_s) * fraction)


def _typed_input(tensor: Any) -> Any:
    """An input whose values come in ``contents``: the field of its datatype, and only that."""
    where = f"input {tensor.name!r}"
    field = _TYPED.get(tensor.datatype)
    if field is None:
        if tensor.datatype in DATATYPES:  # FP16, BF16: no contents field holds them
            raise UserInputError(f"{where}: expected {tensor.datatype} values in raw_input_contents (no typed "
                                 "contents field holds them), got typed contents or none")
        raise UserInputError(f"{where}: expected a datatype among {', '.join(DATATYPES)}, got {tensor.datatype!r}")
    present = [f.name for f, _ in tensor.contents.ListFields()]
    if any(p != field for p in present):
        raise UserInputError(f"{where}: expected its {tensor.datatype} values in contents.{field}, got "
                             + ", ".join(f"contents.{p}" for p in present))
    values = list(getattr(tensor.contents, field))
    shape = list(tensor.shape)
    if all(d >= 0 for d in shape) and len(values) != math.prod(shape):
        raise UserInputError(f"{where}: expected {math.prod(shape)} elements (its shape {shape}), got "
                             f"{len(values)} in contents.{field}")
    if tensor.datatype == "BYTES":  # bytes elements: framed as in the binary extension
        return input_tensor(tensor.name, "BYTES", shape, raw=b"".join(struct.pack("<I", len(v)) + v for v in values))
    return input_tensor(tensor.name, tensor.datatype, shape, values=values)


class InferenceService(service_pb2_grpc.GRPCInferenceServiceServicer):
    """The RPCs, over an :class:`InfernoApp`'s manager."""

    def __init__(self, app: InfernoApp) -> None:
        self.app = app
        self.manager = app.manager
        token = app.config.token
        self._expected = None if token is None else f"Bearer {token}".encode()

    # -- plumbing ------------------------------------------------------------------------------

    def _authorize(self, context: Context) -> None:
        if self._expected is None:
            return
        given = [v for k, v in (context.invocation_metadata() or ()) if k == "authorization"]
        if len(given) == 1 and hmac.compare_digest(str(given[0]).encode(), self._expected):
            return
        found = "got none" if not given else "got a different one" if len(given) == 1 else f"got {len(given)}"
        raise _Refusal(grpc.StatusCode.UNAUTHENTICATED,
                       "authorization: expected metadata 'authorization: Bearer <token>' with the server's "
                       f"token, once, {found}")

    async def _abort(self, context: Context, exc: Exception, rpc: str) -> None:
        """End the RPC with ``exc`` as a status (raises grpc's AbortError, as ``context.abort`` does)."""
        if isinstance(exc, _Refusal):
            await context.abort(exc.code, str(exc))
        if isinstance(exc, InfernoError):
            if isinstance(exc, ServiceUnavailableError):  # as HTTP's Retry-After
                context.set_trailing_metadata((("retry-after", str(max(1, round(exc.retry_after_s)))),))
            await context.abort(STATUS.get(exc.http_status, grpc.StatusCode.INTERNAL), self.app.public(str(exc)))
        await context.abort(grpc.StatusCode.INTERNAL, self.app.internal_error(f"gRPC {rpc}"))

    def _version(self, version: str) -> str | None:
        return version or None

    # -- health and metadata -------------------------------------------------------------------

    async def ServerLive(self, request: Any, context: Context) -> Any:
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Context) -> Any:
        return service_pb2.ServerReadyResponse(ready=self.app.ready)

    async def ModelReady(self, request: Any, context: Context) -> Any:
        try:
            self._authorize(context)
            ready = self.manager.get(request.name, self._version(request.version)).ready
        except _Refusal as exc:
            await self._abort(context, exc, "ModelReady")
        except InfernoError:
            ready = False
        return service_pb2.ModelReadyResponse(ready=ready)

    async def ServerMetadata(self, request: Any, context: Context) -> Any:
        try:
            self._authorize(context)
        except _Refusal as exc:
            await self._abort(context, exc, "ServerMetadata")
        return service_pb2.ServerMetadataResponse(name="inferno", version=__version__,
                                                  extensions=self.app.extensions)

    async def ModelMetadata(self, request: Any, context: Context) -> Any:
        try:
            self._authorize(context)
            served = self.manager.get(request.name, self._version(request.version))
            doc = served.metadata(self.manager.loaded()[request.name])
        except Exception as exc:
            await self._abort(context, exc, "ModelMetadata")
        meta = service_pb2.ModelMetadataResponse.TensorMetadata
        return service_pb2.ModelMetadataResponse(
            name=doc["name"], versions=doc["versions"], platform=doc["platform"],
            inputs=[meta(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in doc["inputs"]],
            outputs=[meta(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in doc["outputs"]])

    async def ModelConfig(self, request: Any, context: Context) -> Any:
        try:
            self._authorize(context)
            config = self.manager.get(request.name, self._version(request.version)).model_config()
        except Exception as exc:
            await self._abort(context, exc, "ModelConfig")
        message = json_format.ParseDict(config, model_config_pb2.ModelConfig(), ignore_unknown_fields=True)
        return service_pb2.ModelConfigResponse(config=message)

    async def ModelStatistics(self, request: Any, context: Context) -> Any:
        try:
            self._authorize(context)
            entries = self.app.statistics(request.name or None, self._version(request.version))
        except Exception as exc:
            await self._abort(context, exc, "ModelStatistics")
        return json_format.ParseDict({"model_stats": entries}, service_pb2.ModelStatisticsResponse(),
                                     ignore_unknown_fields=True)

    # -- repository ----------------------------------------------------------------------------

    async def RepositoryIndex(self, request: Any, context: Context) -> Any:
        try:
            self._authorize(context)
            rows = self.app.repository_index(ready_only=request.ready)
        except Exception as exc:
            await self._abort(context, exc, "RepositoryIndex")
        index = service_pb2.RepositoryIndexResponse.ModelIndex
        return service_pb2.RepositoryIndexResponse(models=[index(**row) for row in rows])

    async def RepositoryModelLoad(self, request: Any, context: Context) -> Any:
        try:
            self._authorize(context)
            unsupported = [k for k in request.parameters if k == "config" or k.startswith("file:")]
            if unsupported:
                raise UserInputError(f"load parameters {unsupported}: not supported; put settings in the "
                                     f"repository's {request.model_name}/serve.json and load again")
            await self.manager.load(request.model_name)
        except Exception as exc:
            await self._abort(context, exc, "RepositoryModelLoad")
        return service_pb2.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: Any, context: Context) -> Any:
        try:
            self._authorize(context)
            await self.manager.unload(request.model_name)
        except Exception as exc:
            await self._abort(context, exc, "RepositoryModelUnload")
        return service_pb2.RepositoryModelUnloadResponse()

    # -- inference -----------------------------------------------------------------------------

    async def _infer(self, request: Any, context: Context) -> Any:
        """One request, counted once in the version's statistics whatever becomes of it."""
        started = time.perf_counter()
        deadline_s = context.time_remaining()
        # one lookup: nothing awaits between it and the batcher's submit (see serving.models)
        served = self.manager.get(request.model_name, self._version(request.model_version))
        served.admit(started)
        try:
            parsed = infer_request(request, deadline_s)
        except UserInputError:
            served.stats.request_failed(time.perf_counter() - started, "rejected")
            raise
        try:
            outputs = await served.infer(parsed, started)  # counts its own failures
        except asyncio.CancelledError:  # the client cancelled, or its deadline ended the call first
            left = context.time_remaining()
            expired = deadline_s is not None and left is not None and left <= _margin(deadline_s)
            served.stats.request_failed(time.perf_counter() - started, "timeout" if expired else "cancelled")
            raise
        try:
            response = _infer_response(request, served.version, outputs)
        except UserInputError:
            served.stats.request_failed(time.perf_counter() - started, "rejected")
            raise
        served.check_response_size(response.ByteSize(), started)
        served.stats.request_done(time.perf_counter() - started)
        return response

    async def ModelInfer(self, request: Any, context: Context) -> Any:
        PROTOCOL.set("grpc")  # this RPC's task only: its requests count as gRPC's
        try:
            self._authorize(context)
            return await self._infer(request, context)
        except Exception as exc:
            await self._abort(context, exc, "ModelInfer")

    async def ModelStreamInfer(self, request_iterator: AsyncIterator[Any],
                               context: Context) -> AsyncIterator[Any]:
        PROTOCOL.set("grpc")
        try:
            self._authorize(context)
        except _Refusal as exc:
            await self._abort(context, exc, "ModelStreamInfer")
        async for request in request_iterator:
            # one bad request answers with its error_message; the stream goes on
            try:
                response = await self._infer(request, context)
            except InfernoError as exc:
                yield service_pb2.ModelStreamInferResponse(error_message=self.app.public(str(exc)))
                continue
            except Exception:
                message = self.app.internal_error(f"gRPC ModelStreamInfer of {request.model_name!r}")
                yield service_pb2.ModelStreamInferResponse(error_message=message)
                continue
            yield service_pb2.ModelStreamInferResponse(infer_response=response)


def _infer_response(request: Any, version: str, outputs: list[Any]) -> Any:
    response = service_pb2.ModelInferResponse(model_name=request.model_name, model_version=version, id=request.id)
    raw = []
    for out in outputs:
        datatype = datatype_of(out.data.dtype)
        response.outputs.add(name=out.name, datatype=datatype, shape=list(out.data.shape))
        raw.append(tensor_bytes(out.data, datatype))
    response.raw_output_contents.extend(raw)
    return response


def _unsupported(name: str) -> Any:
    async def rpc(self: InferenceService, request: Any, context: Context) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                            f"{name}: not supported by inferno (no shared memory, trace or log settings); "
                            "send tensors in raw_input_contents")

    return rpc


for _name in _UNSUPPORTED:
    setattr(InferenceService, _name, _unsupported(_name))


async def start(app: InfernoApp, host: str, port: int, *, max_receive_bytes: int,
                max_send_bytes: int) -> tuple[GrpcServer, int]:
    """A started gRPC server on ``host:port`` (0: a free port); returns it and its port.

    ``max_receive_bytes``: the largest request message (``--max-body-mb``), refused with
    RESOURCE_EXHAUSTED from its length prefix, before it is read. ``max_send_bytes``: the
    largest response message (the response budget, checked before with a clearer message).
    """
    descriptor = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    server = GrpcServer(methods(InferenceService(app), descriptor, service_pb2), max_receive_bytes, max_send_bytes)
    try:
        bound = await server.listen(host, port)
    except OSError as exc:
        raise ConfigError(f"--grpc-port {port}: cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    return server, bound
