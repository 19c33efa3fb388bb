"""The gRPC side of the load generator: Triton's ``inference.GRPCInferenceService``.

Requests are ``ModelInferRequest`` messages with ``raw_input_contents``, serialized once before
the run; each call goes through ``grpc.aio`` with no serializer either way (bytes in, bytes
out), so the client does no protobuf work per request. A call succeeds when its status is OK;
any other status is an error of kind ``gRPC <CODE>`` (``gRPC UNAVAILABLE``, ...).

grpcio and tritonclient's generated messages come with the ``[grpc]`` extra and are imported
only when gRPC is asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np

from inferno.bench.metadata import parse_metadata
from inferno.errors import MissingExtraError, UnknownModelError, UserInputError
from inferno.protocol.address import unreachable
from inferno.protocol.codec import tensor_bytes
from inferno.protocol.metadata import TensorSpec, named

SERVICE = "/inference.GRPCInferenceService/"
INFER = SERVICE + "ModelInfer"
METADATA = SERVICE + "ModelMetadata"
DEFAULT_PORT = 8001
"""Triton's (and ``inferno serve``'s) gRPC port."""
UNLIMITED = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]


def require_grpc() -> tuple[ModuleType, ModuleType]:
    """``(grpc, service_pb2)``.

    Raises:
        MissingExtraError: grpcio or tritonclient[grpc] is not installed.
    """
    try:
        import grpc
        import grpc.aio
        from tritonclient.grpc import service_pb2
    except ImportError as exc:
        raise MissingExtraError(
            "grpcio and tritonclient[grpc]", "grpc", "inferno bench --protocol grpc"
        ) from exc
    return grpc, service_pb2


def call_metadata(token: str | None) -> tuple[tuple[str, str], ...] | None:
    return (("authorization", f"Bearer {token}"),) if token else None


def infer_requests(
    model: str,
    version: str | None,
    specs: tuple[TensorSpec, ...],
    samples: Sequence[dict[str, np.ndarray]],
) -> tuple[bytes, ...]:
    """One serialized ``ModelInferRequest`` per sample: every input in ``raw_input_contents``."""
    _, service_pb2 = require_grpc()
    requests = []
    for arrays in samples:
        request = service_pb2.ModelInferRequest(model_name=model, model_version=version or "")
        for spec in specs:
            array = arrays[spec.name]
            request.inputs.add(name=spec.name, datatype=spec.datatype, shape=list(array.shape))
            request.raw_input_contents.append(tensor_bytes(array, spec.datatype))
        requests.append(request.SerializeToString())
    return tuple(requests)


def failure(exc: Any) -> tuple[str, str]:
    """``(kind, message)`` of an ``AioRpcError``."""
    code = exc.code()
    details = " ".join((exc.details() or "").split())
    return f"gRPC {getattr(code, 'name', code)}", (details or str(code))[:200]


class GrpcSender:
    """Calls ModelInfer over one ``grpc.aio`` channel (HTTP/2: every call a stream of its own)."""

    def __init__(
        self, address: str, requests: tuple[bytes, ...], timeout_s: float, token: str | None
    ) -> None:
        grpc, _ = require_grpc()
        self._error = grpc.aio.AioRpcError
        self.requests = requests
        self.timeout_s = timeout_s
        self.metadata = call_metadata(token)
        self.channel = grpc.aio.insecure_channel(address, options=UNLIMITED)
        self.call = self.channel.unary_unary(
            INFER, request_serializer=None, response_deserializer=None
        )

    async def send(self, index: int) -> tuple[str, str] | None:
        """Request ``index`` (cycled); None when the call's status is OK."""
        try:
            await self.call(
                self.requests[index % len(self.requests)],
                timeout=self.timeout_s,
                metadata=self.metadata,
            )
        except self._error as exc:
            return failure(exc)
        return None

    async def aclose(self) -> None:
        await self.channel.close(grace=None)


def _why(code: str, details: str) -> str:
    lowered = details.lower()
    if "connection refused" in lowered:
        return "connection refused"
    if code == "DEADLINE_EXCEEDED":
        return "no answer in time"
    return f"gRPC {code}: {details}"


async def fetch_inputs(
    address: str, model: str, version: str | None, token: str | None, timeout_s: float
) -> tuple[TensorSpec, ...]:
    """The model's inputs from the ModelMetadata RPC.

    Raises:
        UserInputError: the server cannot be reached, refuses, or answers nonsense.
        UnknownModelError: the server does not serve ``model`` (NOT_FOUND).
        MissingExtraError: the [grpc] extra is not installed.
    """
    grpc, service_pb2 = require_grpc()
    url = f"grpc://{address}"
    which = named(model, version)
    async with grpc.aio.insecure_channel(address, options=UNLIMITED) as channel:
        call = channel.unary_unary(
            METADATA,
            request_serializer=service_pb2.ModelMetadataRequest.SerializeToString,
            response_deserializer=service_pb2.ModelMetadataResponse.FromString,
        )
        try:
            response = await call(
                service_pb2.ModelMetadataRequest(name=model, version=version or ""),
                timeout=timeout_s,
                metadata=call_metadata(token),
            )
        except grpc.aio.AioRpcError as exc:
            kind, details = failure(exc)
            code = kind.removeprefix("gRPC ")
            if code == "NOT_FOUND":
                raise UnknownModelError(
                    f"{which} is not served at {url} ({kind}: {details})"
                ) from exc
            if code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
                raise UserInputError(
                    f"{url} refused the metadata request for {which} ({kind}: {details}); "
                    "pass the server's token with --token"
                ) from exc
            if code in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
                hint = "is `inferno serve` running with its gRPC port there (--grpc-port)?"
                raise UserInputError(unreachable(url, _why(code, details), hint=hint)) from exc
            raise UserInputError(
                f"{which}: metadata request to {url} failed: {kind}: {details}"
            ) from exc
    doc = {
        "inputs": [
            {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
            for t in response.inputs
        ]
    }
    return parse_metadata(doc, model)
