"""gRPC's HTTP/2 transport, written for this server: Triton's service at HTTP's cost per request.

``grpc.aio`` costs ~0.15 ms of server CPU per empty RPC on this project's machines, more than
the whole of an HTTP binary-tensor request through uvicorn (0.12 ms for digits at c=64, model
included): measured with ``benchmarks/grpc_vs_http.py``, gRPC was 0.31-0.55x HTTP. What a
gRPC server must do per call is small: read a HEADERS frame and a DATA frame, parse one
protobuf message (upb, in C), answer with HEADERS, DATA and trailers. This module does that on
an ``asyncio.Protocol`` in the server's own event loop, and calls the same servicer
(:class:`~inferno.serving.grpc_service.InferenceService`) with a context of its own.

What it speaks (RFC 9113 and gRPC's PROTOCOL-HTTP2):

- cleartext HTTP/2 with prior knowledge (what gRPC clients send to ``host:port``); SETTINGS,
  PING, WINDOW_UPDATE, RST_STREAM, GOAWAY; flow control both ways (our receive windows are
  replenished as data arrives; what we send waits for the peer's windows); CONTINUATION;
- HPACK with ``hpack`` (python-hyper) for the requests; answers are encoded without the
  dynamic table (literals and static indices), so no encoder state exists;
- unary and bidirectional-streaming RPCs, metadata (``-bin`` values base64-decoded), the
  ``grpc-timeout`` deadline (the call is cancelled when it passes, as grpc does), messages
  over the receive limit refused with RESOURCE_EXHAUSTED before they are buffered.

Not spoken: TLS (put a proxy in front, as for HTTP), compressed messages (UNIMPLEMENTED names
the encoding), server push. A peer that breaks the framing gets GOAWAY with the error and the
connection closes; no frame can end the server.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import struct
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc
from hpack import Decoder
from hpack.exceptions import HPACKError

log = logging.getLogger(__name__)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20
NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR, REFUSED_STREAM, COMPRESSION_ERROR = (
    0x0, 0x1, 0x3, 0x6, 0x7, 0x9)
SETTINGS_HEADER_TABLE_SIZE, SETTINGS_MAX_CONCURRENT_STREAMS = 0x1, 0x3
SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE = 0x4, 0x5

DEFAULT_WINDOW = 65_535
"""Every HTTP/2 window starts here (the connection's can only grow by WINDOW_UPDATE)."""
RECEIVE_WINDOW = 16 * 2**20
"""What we let a peer send ahead, per stream and per connection: big enough that a request of
``--max-body-mb`` never waits on a window update round trip for long."""
MAX_FRAME = 2**20
"""Largest frame we accept (our SETTINGS_MAX_FRAME_SIZE; the protocol's floor is 16 KiB)."""
MAX_STREAMS = 1024
"""Concurrent streams per connection (SETTINGS_MAX_CONCURRENT_STREAMS)."""
MAX_HEADER_BLOCK = 64 * 1024
"""A header block (HEADERS and its CONTINUATIONs) longer than this is a broken or hostile peer."""
PREFACE_TIMEOUT_S = 10.0
"""A connection that has not sent HTTP/2's preface by then is closed (an idle or slow socket
must not hold a slot for ever; gRPC clients send it at once)."""
MAX_UNSENT = 64 * 2**20
"""Bytes written to a connection and not yet taken by the peer beyond which it is closed:
answers are flow-controlled, so only a peer that floods PINGs or SETTINGS and never reads
gets there."""
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


# --------------------------------------------------------------------------- HPACK


class HeaderDecoder:
    """``hpack.Decoder`` with the header lists of repeated blocks kept by their bytes.

    A gRPC client sends the same few bytes for every call once its headers are in the
    dynamic table (grpc-core rounds ``grpc-timeout`` so that it repeats too): nine bytes of
    indices, which ``hpack`` decodes in ~10 µs and a dict answers in 0.1. A block's meaning
    depends on the table, so the cache holds only blocks that left the table as it was, and
    is emptied whenever a block changes it (an insertion or a size update).
    """

    CACHED = 64

    def __init__(self) -> None:
        self._decoder = Decoder(max_header_list_size=MAX_HEADER_BLOCK)
        self._cache: dict[bytes, list[tuple[str, str]]] = {}
        self._changes = 0
        table = self._decoder.header_table
        add = table.add

        def counted_add(name: bytes, value: bytes) -> Any:
            self._changes += 1
            return add(name, value)

        table.add = counted_add  # type: ignore[method-assign]

    def decode(self, block: bytes) -> list[tuple[str, str]]:
        """Raises hpack's HPACKError on a malformed block."""
        cached = self._cache.get(block)
        if cached is not None:
            return cached
        changes, size = self._changes, self._decoder.header_table.maxsize
        headers = [(str(k), str(v)) for k, v in self._decoder.decode(block, raw=False)]
        if changes != self._changes or size != self._decoder.header_table.maxsize:
            self._cache.clear()
        elif len(self._cache) < self.CACHED:
            self._cache[block] = headers
        return headers


# answers are encoded without the dynamic table: no encoder state to keep


def _integer(value: int, prefix_bits: int, first: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out, value = bytearray([first | limit]), value - limit
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def _literal(name: bytes, value: bytes) -> bytes:
    """A header as a literal without indexing, new name, no Huffman: no encoder state."""
    return b"\x00" + _integer(len(name), 7) + name + _integer(len(value), 7) + value


RESPONSE_HEADERS = b"\x88" + _literal(b"content-type", b"application/grpc")
""":status 200 (static index 8) and the content type: the same bytes for every answer."""


def _percent(text: str) -> bytes:
    """grpc-message's encoding: UTF-8, bytes outside printable ASCII and '%' as %XX."""
    return b"".join(bytes([b]) if 0x20 <= b <= 0x7E and b != 0x25 else b"%%%02X" % b for b in text.encode())


def status_block(code: grpc.StatusCode, details: str, trailing: Iterable[tuple[str, str]] = ()) -> bytes:
    block = _literal(b"grpc-status", str(code.value[0]).encode())
    if details:
        block += _literal(b"grpc-message", _percent(details[:MAX_DETAILS]))
    for key, value in trailing:
        block += _literal(key.lower().encode(), str(value).encode())
    return block


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def parse_timeout(value: str) -> float | None:
    """``grpc-timeout`` (digits and a unit) in seconds; None if malformed (no deadline)."""
    if len(value) < 2 or value[-1] not in TIMEOUT_UNITS or not value[:-1].isdigit():
        return None
    return int(value[:-1]) * TIMEOUT_UNITS[value[-1]]


# --------------------------------------------------------------------------- streams


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


class ProtocolViolation(Exception):
    """The peer broke HTTP/2: GOAWAY with ``code``, then close."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class GrpcConnection(asyncio.Protocol):
    """One client connection: frames in, the servicer called, frames out."""

    def __init__(self, server: GrpcServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.preface = False
        self.streams: dict[int, Stream] = {}
        self.last_stream = 0
        self.decoder = HeaderDecoder()
        self.peer_initial_window = DEFAULT_WINDOW
        self.peer_max_frame = 16_384
        self.send_window = DEFAULT_WINDOW
        self.unacked = 0
        """Bytes received on the connection not yet given back by WINDOW_UPDATE."""
        self.continuing: tuple[int, int, bytearray] | None = None
        """A header block still expecting CONTINUATION: (stream, HEADERS flags, block so far)."""
        self.out = bytearray()
        self.flush_scheduled = False
        self.going_away = False
        self._preface_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport
        self.server.connections.add(self)
        settings = struct.pack(">HIHIHIHI", SETTINGS_MAX_CONCURRENT_STREAMS, MAX_STREAMS,
                               SETTINGS_INITIAL_WINDOW_SIZE, RECEIVE_WINDOW, SETTINGS_MAX_FRAME_SIZE, MAX_FRAME,
                               SETTINGS_HEADER_TABLE_SIZE, 4096)
        self.write(frame(SETTINGS, 0, 0, settings))
        self.write(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", RECEIVE_WINDOW - DEFAULT_WINDOW)))
        self._preface_timer = self.loop.call_later(PREFACE_TIMEOUT_S, self._no_preface)

    def _no_preface(self) -> None:
        if not self.preface and self.transport is not None:
            self._goaway(PROTOCOL_ERROR, f"no HTTP/2 preface within {PREFACE_TIMEOUT_S:g} s")

    def connection_lost(self, exc: Exception | None) -> None:
        if self._preface_timer is not None:
            self._preface_timer.cancel()
        self.server.connections.discard(self)
        for stream in list(self.streams.values()):
            self._cancel(stream)
        self.streams.clear()
        self.server.idle_check()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            self._frames()
        except ProtocolViolation as exc:
            self._goaway(exc.code, str(exc))
        except Exception:  # a bug here must cost one connection, never the server
            log.exception("gRPC connection: unexpected error; closing it")
            self._goaway(PROTOCOL_ERROR, "internal error")

    # -- frames in ------------------------------------------------------------------------------

    def _frames(self) -> None:
        buffer = self.buffer
        if not self.preface:
            if len(buffer) < len(PREFACE):
                if not PREFACE.startswith(bytes(buffer)):
                    raise ProtocolViolation(PROTOCOL_ERROR, "not HTTP/2 (a gRPC port: HTTP/1.1 is on --port)")
                return
            if buffer[: len(PREFACE)] != PREFACE:
                raise ProtocolViolation(PROTOCOL_ERROR, "not HTTP/2 (a gRPC port: HTTP/1.1 is on --port)")
            del buffer[: len(PREFACE)]
            self.preface = True
        offset = 0
        while len(buffer) - offset >= 9:
            length = int.from_bytes(buffer[offset : offset + 3], "big")
            if length > MAX_FRAME:
                raise ProtocolViolation(FRAME_SIZE_ERROR, f"a frame of {length} bytes (at most {MAX_FRAME})")
            if len(buffer) - offset < 9 + length:
                break
            kind, flags = buffer[offset + 3], buffer[offset + 4]
            stream = int.from_bytes(buffer[offset + 5 : offset + 9], "big") & 0x7FFFFFFF
            payload = bytes(buffer[offset + 9 : offset + 9 + length])
            offset += 9 + length
            self._frame(kind, flags, stream, payload)
            if self.transport is None or self.transport.is_closing():
                break
        del buffer[:offset]

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self.continuing is not None and kind != CONTINUATION:
            raise ProtocolViolation(PROTOCOL_ERROR, "a header block interrupted before its end")
        if kind == DATA:
            self._data(stream_id, flags, payload)
        elif kind == HEADERS:
            self._headers(stream_id, flags, payload)
        elif kind == CONTINUATION:
            if self.continuing is None or self.continuing[0] != stream_id:
                raise ProtocolViolation(PROTOCOL_ERROR, "CONTINUATION without its HEADERS")
            block = self.continuing[2]
            block += payload
            if len(block) > MAX_HEADER_BLOCK:
                raise ProtocolViolation(PROTOCOL_ERROR, f"a header block over {MAX_HEADER_BLOCK} bytes")
            if flags & END_HEADERS:
                _, first_flags, _ = self.continuing
                self.continuing = None
                self._header_block(stream_id, first_flags, bytes(block))
        elif kind == SETTINGS:
            self._settings(flags, payload)
        elif kind == PING:
            if len(payload) != 8:
                raise ProtocolViolation(FRAME_SIZE_ERROR, "a PING of other than 8 bytes")
            if not flags & ACK:
                self.write(frame(PING, ACK, 0, payload))
        elif kind == WINDOW_UPDATE:
            self._window_update(stream_id, payload)
        elif kind == RST_STREAM:
            stream = self.streams.pop(stream_id, None)
            if stream is not None:
                self._cancel(stream)
                self.server.idle_check()
        elif kind == GOAWAY:
            self.going_away = True
            self._close_if_done()
        elif kind == PUSH_PROMISE:
            raise ProtocolViolation(PROTOCOL_ERROR, "PUSH_PROMISE from a client")
        # PRIORITY and unknown frame types are ignored, as the protocol asks

    def _settings(self, flags: int, payload: bytes) -> None:
        if flags & ACK:
            return
        if len(payload) % 6:
            raise ProtocolViolation(FRAME_SIZE_ERROR, "a SETTINGS frame not a multiple of 6 bytes")
        for i in range(0, len(payload), 6):
            key, value = struct.unpack_from(">HI", payload, i)
            if key == SETTINGS_INITIAL_WINDOW_SIZE:
                if value > 2**31 - 1:
                    raise ProtocolViolation(FLOW_CONTROL_ERROR, "an initial window over 2^31-1")
                delta, self.peer_initial_window = value - self.peer_initial_window, value
                for stream in self.streams.values():
                    stream.send_window += delta
            elif key == SETTINGS_MAX_FRAME_SIZE:
                if not 16_384 <= value <= 2**24 - 1:
                    raise ProtocolViolation(PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE {value}")
                self.peer_max_frame = value
        self.write(frame(SETTINGS, ACK, 0))
        self._flush_pending()

    def _window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ProtocolViolation(FRAME_SIZE_ERROR, "a WINDOW_UPDATE of other than 4 bytes")
        increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if stream_id == 0:
            self.send_window += increment
        elif (stream := self.streams.get(stream_id)) is not None:
            stream.send_window += increment
        self._flush_pending()

    def _headers(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id == 0 or stream_id % 2 == 0:
            raise ProtocolViolation(PROTOCOL_ERROR, f"HEADERS on stream {stream_id} (clients use odd ids)")
        start, end = 0, len(payload)
        if flags & PADDED:
            if not payload:
                raise ProtocolViolation(PROTOCOL_ERROR, "a padded HEADERS without its pad length")
            start, end = 1, len(payload) - payload[0]
        if flags & PRIORITY_FLAG:
            start += 5
        if start > end:
            raise ProtocolViolation(PROTOCOL_ERROR, "HEADERS padding longer than the frame")
        block = payload[start:end]
        if flags & END_HEADERS:
            self._header_block(stream_id, flags, block)
        else:
            self.continuing = (stream_id, flags, bytearray(block))

    def _header_block(self, stream_id: int, flags: int, block: bytes) -> None:
        try:
            headers = self.decoder.decode(block)
        except HPACKError as exc:
            raise ProtocolViolation(COMPRESSION_ERROR, f"header block: {exc}") from None
        if stream_id in self.streams:  # trailers from a client: the end of its messages
            if flags & END_STREAM:
                self._remote_end(self.streams[stream_id])
            return
        if stream_id <= self.last_stream:
            return  # a stream we already closed (or reset)
        self.last_stream = stream_id
        if self.going_away or self.server.closing or len(self.streams) >= MAX_STREAMS:
            self.write(frame(RST_STREAM, 0, stream_id, struct.pack(">I", REFUSED_STREAM)))
            return
        stream = Stream(stream_id, send_window=self.peer_initial_window)
        self.streams[stream_id] = stream
        self._open(stream, headers)
        if flags & END_STREAM:
            self._remote_end(stream)

    def _open(self, stream: Stream, headers: list[tuple[str, str]]) -> None:
        path, deadline, encoding = "", None, "identity"
        metadata: list[tuple[str, Any]] = []
        for key, value in headers:
            if key == ":path":
                path = value
            elif key.startswith(":") or key in ("te", "content-type", "user-agent"):
                continue
            elif key == "grpc-timeout":
                timeout = parse_timeout(value)
                deadline = None if timeout is None else self.loop.time() + timeout
            elif key == "grpc-encoding":
                encoding = value
            elif key.startswith("grpc-"):
                continue
            elif key.endswith("-bin"):
                with contextlib.suppress(ValueError):
                    metadata.append((key, base64.b64decode(value + "=" * (-len(value) % 4))))
            else:
                metadata.append((key, value))
        method = self.server.methods.get(path)
        if method is None:
            self._finish(stream, grpc.StatusCode.UNIMPLEMENTED, f"Method not found: {path}")
            return
        if encoding != "identity":
            self._finish(stream, grpc.StatusCode.UNIMPLEMENTED,
                         f"grpc-encoding {encoding}: not supported; send uncompressed messages (identity)")
            return
        stream.method = method
        stream.context = Context(tuple(metadata), deadline, self.loop)
        if deadline is not None:
            stream.timer = self.loop.call_at(deadline, self._deadline, stream)
        if method.streaming:
            stream.messages = asyncio.Queue()
            stream.task = self.loop.create_task(self._run(stream))

    def _data(self, stream_id: int, flags: int, payload: bytes) -> None:
        self._consumed(len(payload))
        stream = self.streams.get(stream_id)
        if stream is None or stream.closed or stream.remote_ended:
            return  # a stream already answered (an early error) or reset: its data is dropped
        if stream.messages is None:
            # unary: one message, refused from its length prefix when over the limit, so what
            # is buffered stays bounded; the window is given back as it arrives
            self._give_back(stream, len(payload), flags & END_STREAM)
        start, end = 0, len(payload)
        if flags & PADDED:
            if not payload or payload[0] >= len(payload):
                raise ProtocolViolation(PROTOCOL_ERROR, "DATA padding longer than the frame")
            start, end = 1, len(payload) - payload[0]
        if stream.method is not None:
            stream.buffer += payload[start:end]
            self._messages(stream)
        if flags & END_STREAM and not stream.closed:
            self._remote_end(stream)

    def _give_back(self, stream: Stream, size: int, ended: int = 0) -> None:
        """Return ``size`` bytes of the stream's window (in steps of a quarter window)."""
        stream.unacked += size
        if stream.unacked >= RECEIVE_WINDOW // 4 and not ended and not stream.closed:
            self.write(frame(WINDOW_UPDATE, 0, stream.id, struct.pack(">I", stream.unacked)))
            stream.unacked = 0

    def _consumed(self, size: int) -> None:
        """Give back the connection's window as data arrives (in steps, not per frame)."""
        self.unacked += size
        if self.unacked >= RECEIVE_WINDOW // 4:
            self.write(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self.unacked)))
            self.unacked = 0

    def _messages(self, stream: Stream) -> None:
        buffer, limit = stream.buffer, self.server.max_receive_bytes
        while len(buffer) >= 5:
            compressed = buffer[0]
            length = int.from_bytes(buffer[1:5], "big")
            if length > limit:
                self._finish(stream, grpc.StatusCode.RESOURCE_EXHAUSTED,
                             f"Received message larger than max ({length} vs. {limit})", reset=True)
                return
            if compressed:
                self._finish(stream, grpc.StatusCode.UNIMPLEMENTED,
                             "a compressed message: not supported; send uncompressed messages", reset=True)
                return
            if len(buffer) < 5 + length:
                return
            message = bytes(buffer[5 : 5 + length])
            del buffer[: 5 + length]
            if stream.messages is not None:
                stream.messages.put_nowait(message)
            elif stream.unary is not None:
                self._finish(stream, grpc.StatusCode.INTERNAL, "more than one request message on a unary RPC",
                             reset=True)
                return
            else:
                stream.unary = message

    def _remote_end(self, stream: Stream) -> None:
        stream.remote_ended = True
        if stream.closed or stream.method is None:
            return
        if stream.messages is not None:
            stream.messages.put_nowait(None)
        elif stream.buffer:
            self._finish(stream, grpc.StatusCode.INTERNAL, "the request ended inside a message")
        elif stream.unary is None:
            self._finish(stream, grpc.StatusCode.INTERNAL, "a unary RPC without its request message")
        else:
            stream.task = self.loop.create_task(self._run(stream))

    # -- calls ----------------------------------------------------------------------------------

    async def _run(self, stream: Stream) -> None:
        """One call's handler, to its status: unary, or streaming both ways."""
        method = stream.method
        assert method is not None
        try:
            if stream.messages is None:
                assert stream.unary is not None
                response = await method.handler(self._parse(method, stream.unary), stream.context)
                self._message(stream, response.SerializeToString())
            else:
                async for response in method.handler(self._requests(stream, method), stream.context):
                    self._message(stream, response.SerializeToString())
        except asyncio.CancelledError:
            return
        except Aborted as exc:
            self._finish(stream, exc.code, exc.details, from_task=True)
            return
        except Exception:
            log.exception("gRPC %s: unexpected error", method.name)
            self._finish(stream, grpc.StatusCode.UNKNOWN, "Unexpected error in the RPC handler", from_task=True)
            return
        self._finish(stream, grpc.StatusCode.OK, "", from_task=True)

    @staticmethod
    def _parse(method: Method, message: bytes) -> Any:
        try:
            return method.request.FromString(message)
        except Exception as exc:  # protobuf's DecodeError and kin
            raise Aborted(grpc.StatusCode.INTERNAL, f"Failed to parse the request message: {exc}") from None

    async def _requests(self, stream: Stream, method: Method) -> AsyncIterator[Any]:
        assert stream.messages is not None
        while (message := await stream.messages.get()) is not None:
            # the stream's window comes back as messages are taken, not as they arrive: a
            # client that sends faster than they are answered waits on its window
            self._give_back(stream, 5 + len(message), stream.remote_ended)
            yield self._parse(method, message)

    def _deadline(self, stream: Stream) -> None:
        stream.timer = None
        if stream.closed:
            return
        if stream.task is not None:
            stream.task.cancel()
        self._finish(stream, grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")

    def _cancel(self, stream: Stream) -> None:
        stream.closed = True
        if stream.task is not None and not stream.task.done():
            stream.task.cancel()
        if stream.timer is not None:
            stream.timer.cancel()
        if stream.messages is not None:
            stream.messages.put_nowait(None)

    # -- frames out -----------------------------------------------------------------------------

    def _message(self, stream: Stream, payload: bytes) -> None:
        if stream.closed:
            return
        limit = self.server.max_send_bytes
        if len(payload) > limit:
            raise Aborted(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"Sent message larger than max ({len(payload)} vs. {limit})")
        if not stream.headers_sent:
            self.write(frame(HEADERS, END_HEADERS, stream.id, RESPONSE_HEADERS))
            stream.headers_sent = True
        stream.pending += b"\x00" + struct.pack(">I", len(payload)) + payload
        self._send(stream)

    def _finish(self, stream: Stream, code: grpc.StatusCode, details: str, *, reset: bool = False,
                from_task: bool = False) -> None:
        """End the stream with its status: trailers after the data sent, or trailers only.
        Its handler's task is cancelled unless this is that task ending (``from_task``)."""
        if stream.closed:
            return
        trailing = stream.context.trailing if stream.context is not None else ()
        block = status_block(code, details, trailing)
        if not stream.headers_sent:
            block = RESPONSE_HEADERS + block  # trailers-only: one HEADERS frame
        stream.trailers = frame(HEADERS, END_HEADERS | END_STREAM, stream.id, block)
        stream.closed = True
        if stream.timer is not None:
            stream.timer.cancel()
        if not from_task and stream.task is not None and not stream.task.done():
            stream.task.cancel()
        if reset and not stream.remote_ended:
            stream.pending.clear()
        self._send(stream)
        if reset and not stream.remote_ended:
            # the answer is final: the peer may stop sending (NO_ERROR: not a failure of ours)
            self.write(frame(RST_STREAM, 0, stream.id, struct.pack(">I", NO_ERROR)))

    def _send(self, stream: Stream) -> None:
        """As much of the stream's pending DATA as the windows allow; then its trailers."""
        pending = stream.pending
        while pending:
            room = min(self.send_window, stream.send_window, self.peer_max_frame, len(pending))
            if room <= 0:
                return
            chunk = bytes(pending[:room])
            del pending[:room]
            self.send_window -= room
            stream.send_window -= room
            self.write(frame(DATA, 0, stream.id, chunk))
        if stream.trailers is not None:
            self.write(stream.trailers)
            stream.trailers = None
            if self.streams.pop(stream.id, None) is not None:
                self.server.idle_check()
            self._close_if_done()

    def _flush_pending(self) -> None:
        for stream in list(self.streams.values()):
            if stream.pending or stream.trailers is not None:
                self._send(stream)

    def write(self, data: bytes) -> None:
        """Frames are gathered and written once per loop turn: one syscall for many answers."""
        self.out += data
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self.flush_scheduled = False
        if self.out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(bytes(self.out))
            if self.transport.get_write_buffer_size() > MAX_UNSENT:
                log.warning("gRPC connection: the peer has not read %d bytes of answers; closing it", MAX_UNSENT)
                self.transport.abort()
        self.out.clear()

    def _goaway(self, code: int, reason: str) -> None:
        self.write(frame(GOAWAY, 0, 0, struct.pack(">II", self.last_stream, code) + reason.encode()[:200]))
        self._flush()
        for stream in list(self.streams.values()):
            self._cancel(stream)
        self.streams.clear()
        if self.transport is not None:
            self.transport.close()

    def shutdown(self) -> None:
        """No new streams (GOAWAY NO_ERROR); the connection closes once its streams end."""
        self.going_away = True
        self.write(frame(GOAWAY, 0, 0, struct.pack(">II", self.last_stream, NO_ERROR)))
        self._close_if_done()

    def _close_if_done(self) -> None:
        if self.going_away and not self.streams and self.transport is not None:
            self._flush()
            self.transport.close()


class GrpcServer:
    """The listening socket and its connections; ``stop(grace)`` as grpc.aio's server."""

    def __init__(self, methods: dict[str, Method], max_receive_bytes: int, max_send_bytes: int) -> None:
        self.methods = methods
        self.max_receive_bytes, self.max_send_bytes = max_receive_bytes, max_send_bytes
        self.connections: set[GrpcConnection] = set()
        self.closing = False
        self._server: asyncio.base_events.Server | None = None
        self._idle: asyncio.Event | None = None

    async def listen(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0: a free port); the port. Raises OSError (taken, bad host)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: GrpcConnection(self), host, port, reuse_address=True)
        return int(self._server.sockets[0].getsockname()[1])

    def idle_check(self) -> None:
        if self._idle is not None and not any(c.streams for c in self.connections):
            self._idle.set()

    async def stop(self, grace: float | None) -> None:
        """Refuse new calls, let those in flight finish for ``grace`` seconds, then close all."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        self._idle = asyncio.Event()
        for connection in list(self.connections):
            connection.shutdown()
        self.idle_check()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace)
        for connection in list(self.connections):
            connection._goaway(NO_ERROR, "server stopped")
