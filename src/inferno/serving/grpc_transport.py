"""gRPC's HTTP/2 transport, written for this server: Triton's service at HTTP's cost per request.

``grpc.aio`` cost ~0.15 ms of server CPU per empty RPC here, more than a whole HTTP binary
request through uvicorn with the model in it (digits at c=64): gRPC was 0.31-0.55x HTTP
(``benchmarks/grpc_vs_http.py``). A call needs little: a HEADERS and a DATA frame read, one
protobuf message parsed (upb, in C), HEADERS, DATA and trailers written. This module does that
on an ``asyncio.Protocol`` in the server's event loop and calls the same servicer
(:class:`~inferno.serving.grpc_service.InferenceService`) with a :class:`Context` of its own.

It speaks (RFC 9113, gRPC's PROTOCOL-HTTP2) cleartext HTTP/2 with prior knowledge, flow
control both ways, unary and bidirectional-streaming RPCs, metadata (``-bin`` values
decoded), ``grpc-timeout`` deadlines (the call is cancelled when one passes, as grpc does),
and refuses a message over the receive limit from its length prefix (RESOURCE_EXHAUSTED).
Not spoken: TLS (a proxy in front, as for HTTP), compressed messages (UNIMPLEMENTED, naming
the encoding), server push. A peer that breaks the framing gets GOAWAY and is closed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import struct
from collections.abc import AsyncIterator
from typing import Any

import grpc
from hpack.exceptions import HPACKError

from inferno.serving.grpc_call import (
    RESPONSE_HEADERS,
    Aborted,
    Context,
    Method,
    Stream,
    parse_timeout,
    status_block,
)
from inferno.serving.http2 import (
    ACK,
    COMPRESSION_ERROR,
    DATA,
    DEFAULT_WINDOW,
    END_HEADERS,
    END_STREAM,
    FLOW_CONTROL_ERROR,
    GOAWAY,
    HEADERS,
    MAX_FRAME,
    NO_ERROR,
    PING,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    RST_STREAM,
    SETTINGS,
    SETTINGS_HEADER_TABLE_SIZE,
    SETTINGS_INITIAL_WINDOW_SIZE,
    SETTINGS_MAX_CONCURRENT_STREAMS,
    SETTINGS_MAX_FRAME_SIZE,
    WINDOW_UPDATE,
    FrameReader,
    HeaderDecoder,
    ProtocolViolation,
    frame,
)

log = logging.getLogger(__name__)

RECEIVE_WINDOW = 16 * 2**20
"""What we let a peer send ahead, per stream and per connection: big enough that a request of
``--max-body-mb`` never waits on a window update round trip for long."""
MAX_STREAMS = 1024
"""Concurrent streams per connection (SETTINGS_MAX_CONCURRENT_STREAMS)."""
PREFACE_TIMEOUT_S = 10.0
"""A connection that has not sent HTTP/2's preface by then is closed (an idle or slow socket
must not hold a slot for ever; gRPC clients send it at once)."""
MAX_UNSENT = 64 * 2**20
"""Bytes written to a connection and not yet taken by the peer beyond which it is closed:
answers are flow-controlled, so only a peer that floods PINGs or SETTINGS and never reads
gets there."""


class GrpcConnection(FrameReader, asyncio.Protocol):
    """One client connection: frames in, the servicer called, frames out."""

    def __init__(self, server: GrpcServer) -> None:
        super().__init__()
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, Stream] = {}
        self.last_stream = 0
        self.decoder = HeaderDecoder()
        self.peer_initial_window = DEFAULT_WINDOW
        self.peer_max_frame = 16_384
        self.send_window = DEFAULT_WINDOW
        self.unacked = 0
        """Bytes received on the connection not yet given back by WINDOW_UPDATE."""
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
        try:
            self.feed(data)
        except ProtocolViolation as exc:
            self._goaway(exc.code, str(exc))
        except Exception:  # a bug here must cost one connection, never the server
            log.exception("gRPC connection: unexpected error; closing it")
            self._goaway(PROTOCOL_ERROR, "internal error")

    # -- frames in (FrameReader's callbacks) ------------------------------------------------------

    def stopped(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def on_ping(self, payload: bytes) -> None:
        self.write(frame(PING, ACK, 0, payload))

    def on_reset(self, stream_id: int) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            self._cancel(stream)
            self.server.idle_check()

    def on_goaway(self) -> None:
        self.going_away = True
        self._close_if_done()

    def on_settings(self, settings: list[tuple[int, int]]) -> None:
        for key, value in settings:
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

    def on_window_update(self, stream_id: int, increment: int) -> None:
        if stream_id == 0:
            self.send_window += increment
        elif (stream := self.streams.get(stream_id)) is not None:
            stream.send_window += increment
        self._flush_pending()

    def on_header_block(self, stream_id: int, flags: int, block: bytes) -> None:
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

    def on_data(self, stream_id: int, flags: int, data: bytes, size: int) -> None:
        self._consumed(size)
        stream = self.streams.get(stream_id)
        if stream is None or stream.closed or stream.remote_ended:
            return  # a stream already answered (an early error) or reset: its data is dropped
        if stream.messages is None:
            # unary: one message, refused from its length prefix when over the limit, so what
            # is buffered stays bounded; the window is given back as it arrives
            self._give_back(stream, size, bool(flags & END_STREAM))
        if stream.method is not None:
            stream.buffer += data
            self._messages(stream)
        if flags & END_STREAM and not stream.closed:
            self._remote_end(stream)

    def _give_back(self, stream: Stream, size: int, ended: bool = False) -> None:
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
            message = bytes(memoryview(buffer)[5 : 5 + length])  # one copy: a slice of a bytearray is another
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
