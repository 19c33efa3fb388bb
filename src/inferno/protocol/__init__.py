"""The Open Inference Protocol v2 (KServe / Triton) on the wire, for everyone who speaks it.

One datatype table (:mod:`~inferno.protocol.datatypes`), one tensor codec for JSON and
Triton's binary extension (:mod:`~inferno.protocol.codec`), one :class:`TensorSpec` as
model metadata shows a tensor (:mod:`~inferno.protocol.metadata`), the server's address and
the line said when it cannot be reached (:mod:`~inferno.protocol.address`), and two clients:
a synchronous one over ``http.client`` (:mod:`~inferno.protocol.client`: the monitor, the
cascade's cloud) and an asynchronous lean HTTP/1.1 one (:mod:`~inferno.protocol.aio`: the
load generator).

This layer sits below ``serving``, ``bench``, ``edge`` and ``monitoring`` and imports only
``errors`` and ``_version`` (and numpy, orjson): a client never pulls in the server.
"""

from __future__ import annotations

from inferno.protocol.address import DEFAULT_URL, Address, check_url, unreachable
from inferno.protocol.client import Client, Response, Unreachable
from inferno.protocol.codec import (
    HEADER_LENGTH,
    encode_request,
    error_body,
    error_text,
    request_headers,
    response_outputs,
    tensor_bytes,
    tensor_from_bytes,
)
from inferno.protocol.datatypes import DATATYPES, KNOWN, datatype_of, value_dtype, wire_size
from inferno.protocol.metadata import TensorSpec, model_path

__all__ = [
    "DATATYPES",
    "DEFAULT_URL",
    "HEADER_LENGTH",
    "KNOWN",
    "Address",
    "Client",
    "Response",
    "TensorSpec",
    "Unreachable",
    "check_url",
    "datatype_of",
    "encode_request",
    "error_body",
    "error_text",
    "model_path",
    "request_headers",
    "response_outputs",
    "tensor_bytes",
    "tensor_from_bytes",
    "unreachable",
    "value_dtype",
    "wire_size",
]
