"""Triton's ``inference.GRPCInferenceService`` over the same models as HTTP (``--grpc-port``).

The wire contract is the one ``tritonclient[grpc]`` ships (its generated ``service_pb2`` and
``model_config_pb2``): no copied proto, so Triton's own clients take this server for Triton.
It runs on ``grpc.aio`` in the HTTP server's event loop and goes through the same manager,
batchers, cache, statistics, limits and token; errors map to status codes in one place
(:data:`STATUS`), with the same messages as HTTP.

Tensors travel as ``raw_input_contents`` / ``raw_output_contents`` (what ``tritonclient.grpc``
sends and decodes); typed ``contents`` are accepted too, never mixed with raw in one request.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from inferno import __version__
from inferno.errors import ConfigError, InfernoError, UserInputError
from inferno.serving.protocol import (
    InferRequest,
    datatype_of,
    input_tensor,
    requested_outputs,
    tensor_bytes,
)

if TYPE_CHECKING:
    from inferno.serving.app import InfernoApp

log = logging.getLogger(__name__)

STATUS = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
          404: grpc.StatusCode.NOT_FOUND, 405: grpc.StatusCode.UNIMPLEMENTED,
          413: grpc.StatusCode.RESOURCE_EXHAUSTED, 500: grpc.StatusCode.INTERNAL,
          503: grpc.StatusCode.UNAVAILABLE, 504: grpc.StatusCode.DEADLINE_EXCEEDED}
"""HTTP status of an InfernoError → gRPC status code: the one map for this protocol."""

_TYPED = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
          "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
          "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
          "FP64": "fp64_contents", "BYTES": "bytes_contents"}
"""Which ``InferTensorContents`` field carries a datatype (FP16 and BF16 travel raw only)."""

_UNSUPPORTED = ("SystemSharedMemoryStatus", "SystemSharedMemoryRegister", "SystemSharedMemoryUnregister",
                "CudaSharedMemoryStatus", "CudaSharedMemoryRegister", "CudaSharedMemoryUnregister",
                "TraceSetting", "LogSettings")


class _Refusal(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def _parameter(p: Any) -> Any:
    kind = p.WhichOneof("parameter_choice")
    return getattr(p, kind) if kind else None


def infer_request(request: Any, deadline_s: float | None) -> InferRequest:
    """A ``ModelInferRequest`` as the protocol's :class:`InferRequest` (400s name the input)."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise UserInputError(f"raw_input_contents: expected one entry per input ({len(request.inputs)}), "
                             f"got {len(raw)}")
    inputs = {}
    for i, tensor in enumerate(request.inputs):
        shape = list(tensor.shape)
        has_typed = tensor.HasField("contents")
        if raw and has_typed:
            raise UserInputError(f"input {tensor.name!r}: expected raw_input_contents or typed contents, "
                                 "got both in one request")
        if raw:
            parsed = input_tensor(tensor.name, tensor.datatype, shape, raw=raw[i])
        else:
            field = _TYPED.get(tensor.datatype)
            if field is None:
                raise UserInputError(f"input {tensor.name!r}: {tensor.datatype!r} travels in raw_input_contents "
                                     f"only, got typed contents")
            values = list(getattr(tensor.contents, field))
            if tensor.datatype == "BYTES":  # bytes elements: framed as in the binary extension
                parsed = input_tensor(tensor.name, "BYTES", shape,
                                      raw=b"".join(struct.pack("<I", len(v)) + v for v in values))
            else:
                parsed = input_tensor(tensor.name, tensor.datatype, shape, values=values)
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
        timeout = min(timeout, int(deadline_s * 1e6)) if timeout is not None else int(deadline_s * 1e6)
    return InferRequest(inputs, outputs, True, request.id or None, timeout, params)


class InferenceService(service_pb2_grpc.GRPCInferenceServiceServicer):
    """The RPCs, over an :class:`InfernoApp`'s manager."""

    def __init__(self, app: InfernoApp) -> None:
        self.app = app
        self.manager = app.manager
        token = app.config.token
        self._expected = None if token is None else f"Bearer {token}"

    # -- plumbing ------------------------------------------------------------------------------

    def _authorize(self, context: grpc.aio.ServicerContext) -> None:
        if self._expected is None:
            return
        given = [v for k, v in (context.invocation_metadata() or ()) if k == "authorization"]
        if given != [self._expected]:
            raise _Refusal(grpc.StatusCode.UNAUTHENTICATED,
                           "authorization: expected metadata 'authorization: Bearer <token>' with the server's "
                           "token, once, " + ("got a different one" if given else "got none"))

    async def _abort(self, context: grpc.aio.ServicerContext, exc: Exception) -> None:
        if isinstance(exc, _Refusal):
            await context.abort(exc.code, str(exc))
        if isinstance(exc, InfernoError):
            if exc.http_status == 503:
                context.set_trailing_metadata((("retry-after", "1"),))
            await context.abort(STATUS.get(exc.http_status, grpc.StatusCode.INTERNAL), self.app.public(str(exc)))
        log.exception("gRPC request failed")
        await context.abort(grpc.StatusCode.INTERNAL, "internal error; the server log has the details")

    def _version(self, version: str) -> str | None:
        return version or None

    # -- health and metadata -------------------------------------------------------------------

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return service_pb2.ServerReadyResponse(ready=self.app.ready)

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            self._authorize(context)
            ready = self.manager.get(request.name, self._version(request.version)).ready
        except _Refusal as exc:
            await self._abort(context, exc)
        except InfernoError:
            ready = False
        return service_pb2.ModelReadyResponse(ready=ready)

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            self._authorize(context)
        except _Refusal as exc:
            await self._abort(context, exc)
        return service_pb2.ServerMetadataResponse(name="inferno", version=__version__,
                                                  extensions=self.app.extensions)

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            self._authorize(context)
            served = self.manager.get(request.name, self._version(request.version))
            doc = served.metadata(self.manager.loaded()[request.name])
        except Exception as exc:
            await self._abort(context, exc)
        meta = service_pb2.ModelMetadataResponse.TensorMetadata
        return service_pb2.ModelMetadataResponse(
            name=doc["name"], versions=doc["versions"], platform=doc["platform"],
            inputs=[meta(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in doc["inputs"]],
            outputs=[meta(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in doc["outputs"]])

    async def ModelConfig(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            self._authorize(context)
            config = self.manager.get(request.name, self._version(request.version)).model_config()
        except Exception as exc:
            await self._abort(context, exc)
        message = json_format.ParseDict(config, model_config_pb2.ModelConfig(), ignore_unknown_fields=True)
        return service_pb2.ModelConfigResponse(config=message)

    async def ModelStatistics(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            self._authorize(context)
            entries = self.app.statistics(request.name or None, self._version(request.version))
        except Exception as exc:
            await self._abort(context, exc)
        return json_format.ParseDict({"model_stats": entries}, service_pb2.ModelStatisticsResponse(),
                                     ignore_unknown_fields=True)

    # -- repository ----------------------------------------------------------------------------

    async def RepositoryIndex(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            self._authorize(context)
            rows = self.app.repository_index(ready_only=request.ready)
        except Exception as exc:
            await self._abort(context, exc)
        index = service_pb2.RepositoryIndexResponse.ModelIndex
        return service_pb2.RepositoryIndexResponse(models=[index(**row) for row in rows])

    async def RepositoryModelLoad(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            self._authorize(context)
            unsupported = [k for k in request.parameters if k == "config" or k.startswith("file:")]
            if unsupported:
                raise UserInputError(f"load parameters {unsupported}: not supported; put settings in the "
                                     f"repository's {request.model_name}/serve.json and load again")
            await self.manager.load(request.model_name)
        except Exception as exc:
            await self._abort(context, exc)
        return service_pb2.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            self._authorize(context)
            await self.manager.unload(request.model_name)
        except Exception as exc:
            await self._abort(context, exc)
        return service_pb2.RepositoryModelUnloadResponse()

    # -- inference -----------------------------------------------------------------------------

    async def _infer(self, request: Any, deadline_s: float | None) -> Any:
        started = time.perf_counter()
        version = self._version(request.model_version)
        self.manager.get(request.model_name, version).admit(started)
        parsed = infer_request(request, deadline_s)
        served = self.manager.get(request.model_name, version)
        outputs = await served.infer(parsed, started)
        response = service_pb2.ModelInferResponse(model_name=request.model_name, model_version=served.version,
                                                  id=request.id)
        raw = []
        for out in outputs:
            datatype = datatype_of(out.data.dtype)
            response.outputs.add(name=out.name, datatype=datatype, shape=list(out.data.shape))
            raw.append(tensor_bytes(out.data, datatype))
        response.raw_output_contents.extend(raw)
        served.check_response_size(response.ByteSize(), started)
        served.stats.request_done(time.perf_counter() - started)
        return response

    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            self._authorize(context)
            return await self._infer(request, context.time_remaining())
        except Exception as exc:
            await self._abort(context, exc)

    async def ModelStreamInfer(self, request_iterator: AsyncIterator[Any],
                               context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            self._authorize(context)
        except _Refusal as exc:
            await self._abort(context, exc)
        async for request in request_iterator:
            # one bad request answers with its error_message; the stream goes on
            try:
                response = await self._infer(request, context.time_remaining())
            except InfernoError as exc:
                yield service_pb2.ModelStreamInferResponse(error_message=self.app.public(str(exc)))
                continue
            except Exception:
                log.exception("gRPC stream request failed")
                yield service_pb2.ModelStreamInferResponse(
                    error_message="internal error; the server log has the details")
                continue
            yield service_pb2.ModelStreamInferResponse(infer_response=response)


def _unsupported(name: str) -> Any:
    async def rpc(self: InferenceService, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                            f"{name}: not supported by inferno (no shared memory, trace or log settings); "
                            "send tensors in raw_input_contents")

    return rpc


for _name in _UNSUPPORTED:
    setattr(InferenceService, _name, _unsupported(_name))


async def start(app: InfernoApp, host: str, port: int, max_message_bytes: int) -> tuple[grpc.aio.Server, int]:
    """A started gRPC server on ``host:port`` (0: a free port); returns it and its port."""
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.so_reuseport", 0),
    ])
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(app), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    bound = server.add_insecure_port(address)
    if bound == 0:
        raise ConfigError(f"--grpc-port {port}: cannot listen on {host}:{port} (taken?)")
    await server.start()
    return server, bound
