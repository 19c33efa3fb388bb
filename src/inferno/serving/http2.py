"""HTTP/2's wire for the gRPC transport (RFC 9113): frames, the client's framing read, HPACK.

:class:`FrameReader` cuts a connection's bytes into frames, checks what the framing layer
itself forbids (sizes, padding, interrupted header blocks) and hands each frame's meaning to
its subclass (:class:`~inferno.serving.grpc_transport.GrpcConnection`). Requests' header
blocks are decoded by ``hpack`` (python-hyper) behind a cache (:class:`HeaderDecoder`);
answers are encoded without the dynamic table (:func:`literal`), so no encoder state exists.
"""

from __future__ import annotations

import struct
from typing import Any

from hpack import Decoder

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
MAX_FRAME = 2**20
"""Largest frame we accept (our SETTINGS_MAX_FRAME_SIZE; the protocol's floor is 16 KiB)."""
MAX_HEADER_BLOCK = 64 * 1024
"""A header block (HEADERS and its CONTINUATIONs) longer than this is a broken or hostile peer."""
NOT_HTTP2 = "not HTTP/2 (a gRPC port: HTTP/1.1 is on --port)"


class ProtocolViolation(Exception):
    """The peer broke HTTP/2: GOAWAY with ``code``, then close."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


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


def literal(name: bytes, value: bytes) -> bytes:
    """A header as a literal without indexing, new name, no Huffman: no encoder state."""
    return b"\x00" + _integer(len(name), 7) + name + _integer(len(value), 7) + value


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



class FrameReader:
    """The server side of HTTP/2's framing: the client's preface, frames cut from the byte
    stream, header blocks put together from HEADERS and CONTINUATION, padding and priority
    stripped. A subclass gives the frames their meaning (the ``on_*`` methods); every method
    raises :class:`ProtocolViolation` for a peer that broke the protocol."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.preface = False
        self.continuing: tuple[int, int, bytearray] | None = None
        """A header block still expecting CONTINUATION: (stream, HEADERS flags, block so far)."""

    def stopped(self) -> bool:
        """True once the connection is closing: the frames after are not read."""
        return False

    def feed(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if not self.preface:
            if len(buffer) < len(PREFACE):
                if not PREFACE.startswith(bytes(buffer)):
                    raise ProtocolViolation(PROTOCOL_ERROR, NOT_HTTP2)
                return
            if buffer[: len(PREFACE)] != PREFACE:
                raise ProtocolViolation(PROTOCOL_ERROR, NOT_HTTP2)
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
            if self.stopped():
                break
        del buffer[:offset]

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self.continuing is not None and kind != CONTINUATION:
            raise ProtocolViolation(PROTOCOL_ERROR, "a header block interrupted before its end")
        if kind == DATA:
            start, end = _unpadded(flags, payload, "DATA")
            self.on_data(stream_id, flags, payload[start:end], len(payload))
        elif kind == HEADERS:
            self._headers(stream_id, flags, payload)
        elif kind == CONTINUATION:
            self._continuation(stream_id, flags, payload)
        elif kind == SETTINGS:
            if len(payload) % 6:
                raise ProtocolViolation(FRAME_SIZE_ERROR, "a SETTINGS frame not a multiple of 6 bytes")
            if not flags & ACK:
                self.on_settings([struct.unpack_from(">HI", payload, i) for i in range(0, len(payload), 6)])
        elif kind == PING:
            if len(payload) != 8:
                raise ProtocolViolation(FRAME_SIZE_ERROR, "a PING of other than 8 bytes")
            if not flags & ACK:
                self.on_ping(payload)
        elif kind == WINDOW_UPDATE:
            if len(payload) != 4:
                raise ProtocolViolation(FRAME_SIZE_ERROR, "a WINDOW_UPDATE of other than 4 bytes")
            self.on_window_update(stream_id, int.from_bytes(payload, "big") & 0x7FFFFFFF)
        elif kind == RST_STREAM:
            self.on_reset(stream_id)
        elif kind == GOAWAY:
            self.on_goaway()
        elif kind == PUSH_PROMISE:
            raise ProtocolViolation(PROTOCOL_ERROR, "PUSH_PROMISE from a client")
        # PRIORITY and unknown frame types are ignored, as the protocol asks

    def _headers(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id == 0 or stream_id % 2 == 0:
            raise ProtocolViolation(PROTOCOL_ERROR, f"HEADERS on stream {stream_id} (clients use odd ids)")
        start, end = _unpadded(flags, payload, "HEADERS")
        if flags & PRIORITY_FLAG:
            start += 5
        if start > end:
            raise ProtocolViolation(PROTOCOL_ERROR, "HEADERS shorter than its priority fields")
        if flags & END_HEADERS:
            self.on_header_block(stream_id, flags, payload[start:end])
        else:
            self.continuing = (stream_id, flags, bytearray(payload[start:end]))

    def _continuation(self, stream_id: int, flags: int, payload: bytes) -> None:
        if self.continuing is None or self.continuing[0] != stream_id:
            raise ProtocolViolation(PROTOCOL_ERROR, "CONTINUATION without its HEADERS")
        block = self.continuing[2]
        block += payload
        if len(block) > MAX_HEADER_BLOCK:
            raise ProtocolViolation(PROTOCOL_ERROR, f"a header block over {MAX_HEADER_BLOCK} bytes")
        if flags & END_HEADERS:
            first_flags = self.continuing[1]
            self.continuing = None
            self.on_header_block(stream_id, first_flags, bytes(block))

    def on_data(self, stream_id: int, flags: int, data: bytes, size: int) -> None:
        """``data`` without padding; ``size``, the whole frame's payload (what flow control counts)."""
        raise NotImplementedError

    def on_header_block(self, stream_id: int, flags: int, block: bytes) -> None:
        raise NotImplementedError

    def on_settings(self, settings: list[tuple[int, int]]) -> None:
        raise NotImplementedError

    def on_ping(self, payload: bytes) -> None:
        raise NotImplementedError

    def on_window_update(self, stream_id: int, increment: int) -> None:
        raise NotImplementedError

    def on_reset(self, stream_id: int) -> None:
        raise NotImplementedError

    def on_goaway(self) -> None:
        raise NotImplementedError


def _unpadded(flags: int, payload: bytes, kind: str) -> tuple[int, int]:
    """Where a frame's content lies once its padding is stripped."""
    if not flags & PADDED:
        return 0, len(payload)
    if not payload or payload[0] >= len(payload):
        raise ProtocolViolation(PROTOCOL_ERROR, f"{kind} padding longer than the frame")
    return 1, len(payload) - payload[0]
