"""One gRPC call on the HTTP/2 transport: its method, context, stream state and status.

The part of ``grpc.aio``'s server API the servicer uses (:class:`Context`, ``abort`` raising
:class:`Aborted`), the method table built from the service's descriptor (:func:`methods`),
and how a status travels: trailers of literal headers, ``grpc-message`` percent-encoded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc

from inferno.serving.http2 import DEFAULT_WINDOW, literal

MAX_DETAILS = 4096
"""Characters of a status message sent (a HEADERS frame must fit the peer's frame size)."""
TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


class Aborted(Exception):
    """``context.abort``: the RPC ends with this status (grpc.aio raises its AbortError)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


@dataclass(frozen=True)
class Method:
    name: str
    request: Any
    """The request message class (``FromString`` parses)."""
    streaming: bool
    """Bidirectional streaming (ModelStreamInfer); else unary."""
    handler: Callable[..., Any]


def methods(service: Any, descriptor: Any, messages: Any) -> dict[str, Method]:
    """Each RPC of ``descriptor`` (a protobuf ServiceDescriptor) by its HTTP/2 path, bound to
    ``service``'s method of the same name; message classes from the module ``messages``."""
    table = {}
    for rpc in descriptor.methods:
        handler = getattr(service, rpc.name, None)
        # unary and bidirectional only: Triton's service has no one-sided streaming RPC
        if handler is None or rpc.client_streaming != rpc.server_streaming:
            continue  # answered UNIMPLEMENTED, as a method the service lacks
        table[f"/{descriptor.full_name}/{rpc.name}"] = Method(
            rpc.name, getattr(messages, rpc.input_type.name), rpc.client_streaming, handler)
    return table


class Context:
    """The part of ``grpc.aio.ServicerContext`` the servicer uses."""

    def __init__(self, metadata: tuple[tuple[str, Any], ...], deadline: float | None,
                 loop: asyncio.AbstractEventLoop) -> None:
        self._metadata, self._deadline, self._loop = metadata, deadline, loop
        self.trailing: tuple[tuple[str, str], ...] = ()

    def invocation_metadata(self) -> tuple[tuple[str, Any], ...]:
        return self._metadata

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - self._loop.time())

    def set_trailing_metadata(self, metadata: Iterable[tuple[str, str]]) -> None:
        self.trailing = tuple(metadata)

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise Aborted(code, details)


RESPONSE_HEADERS = b"\x88" + literal(b"content-type", b"application/grpc")
""":status 200 (static index 8) and the content type: the same bytes for every answer."""


def percent_encoded(text: str) -> bytes:
    """grpc-message's encoding: UTF-8, bytes outside printable ASCII and '%' as %XX."""
    return b"".join(bytes([b]) if 0x20 <= b <= 0x7E and b != 0x25 else b"%%%02X" % b for b in text.encode())


def status_block(code: grpc.StatusCode, details: str, trailing: Iterable[tuple[str, str]] = ()) -> bytes:
    block = literal(b"grpc-status", str(code.value[0]).encode())
    if details:
        block += literal(b"grpc-message", percent_encoded(details[:MAX_DETAILS]))
    for key, value in trailing:
        block += literal(key.lower().encode(), str(value).encode())
    return block


def parse_timeout(value: str) -> float | None:
    """``grpc-timeout`` (digits and a unit) in seconds; None if malformed (no deadline)."""
    if len(value) < 2 or value[-1] not in TIMEOUT_UNITS or not value[:-1].isdigit():
        return None
    return int(value[:-1]) * TIMEOUT_UNITS[value[-1]]


@dataclass
class Stream:
    id: int
    method: Method | None = None
    context: Context | None = None
    buffer: bytearray = field(default_factory=bytearray)
    messages: asyncio.Queue[bytes | None] | None = None
    """Streaming RPCs: each request message as it completes; None once the peer ended."""
    unary: bytes | None = None
    remote_ended: bool = False
    closed: bool = False
    """Our END_STREAM sent (or the stream reset): later frames for it are discarded."""
    task: asyncio.Task[None] | None = None
    send_window: int = DEFAULT_WINDOW
    headers_sent: bool = False
    unacked: int = 0
    """Bytes received on this stream not yet given back by WINDOW_UPDATE."""
    pending: bytearray = field(default_factory=bytearray)
    """DATA not yet sent for want of window; ``trailers`` go once it is empty."""
    trailers: bytes | None = None
    timer: asyncio.TimerHandle | None = None
