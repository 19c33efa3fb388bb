"""One HTTP exchange, in the order it happens: the request's headers, its body (the size
limit enforced while reading, then decompression), and the reply — every error mapped to its
status and headers in one place (Retry-After on 503, WWW-Authenticate on 401, Allow on 405).

The routes (``serving.app``) sit between the two ends.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from inferno.errors import (
    InfernoError,
    PayloadTooLargeError,
    ServiceUnavailableError,
    UnauthorizedError,
    UserInputError,
)
from inferno.protocol.codec import error_body

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Reply = tuple[int, bytes, list[tuple[bytes, bytes]]]

JSON = (b"content-type", b"application/json")
"""The content type of every JSON answer."""
WANTED = {b"authorization", b"content-length", b"content-encoding", b"inference-header-content-length"}
"""The request headers the routes read; the others are not decoded."""


class Exchange:
    """One HTTP request: what the handlers need of it."""

    __slots__ = ("duplicated", "headers", "method", "receive", "started")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.method: str = scope["method"]
        self.headers: dict[str, str] = {}
        self.duplicated: str | None = None
        """A header this server reads that came more than once: which one wins is ambiguous."""
        for k, v in scope["headers"]:
            if k in WANTED:
                name = k.decode()
                if name in self.headers:
                    self.duplicated = name
                self.headers[name] = v.decode("latin-1")
        self.receive = receive
        self.started = time.perf_counter()


class ClientDisconnected(Exception):
    """The client went away before sending its whole body."""


class MethodNotAllowed(UserInputError):
    """A known endpoint asked with the wrong method (405, with Allow)."""

    http_status = 405

    def __init__(self, message: str, allow: str) -> None:
        super().__init__(message)
        self.allow = allow


class NotFound(UserInputError):
    """No such endpoint, or nothing behind it (404)."""

    http_status = 404


async def read_body(receive: Receive, headers: dict[str, str], limit: int) -> bytes:
    """A request's whole body, decompressed (gzip/deflate), never more than ``limit`` bytes.

    ``headers`` maps lower-case names to values (``content-length``, ``content-encoding``).
    The limit is enforced while reading, before a larger body is held in memory.

    Raises:
        PayloadTooLargeError: declared or found larger than ``limit``, before or after decompression.
        UserInputError: an unknown content-encoding, or a body that does not decompress.
        ClientDisconnected: the client left before sending the whole body.
    """
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"request body: expected at most {limit} bytes, got {declared}")
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"request body: expected at most {limit} bytes, got more")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    encoding = headers.get("content-encoding", "identity").lower()
    if encoding in ("gzip", "deflate"):
        return _decompress(body, encoding, limit)
    if encoding != "identity":
        raise UserInputError(f"content-encoding: expected gzip, deflate or identity, got {encoding!r}")
    return body


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise UserInputError(f"request body: declared {encoding}, but it does not decompress ({exc})") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise PayloadTooLargeError(f"request body: expected at most {limit} bytes once decompressed, got more")
    if not inflater.eof:
        raise UserInputError(f"request body: declared {encoding}, expected a complete stream, got a truncated one")
    if inflater.unused_data:
        raise UserInputError(f"request body: declared {encoding}, expected nothing after the compressed stream, "
                             f"got {len(inflater.unused_data)} more bytes")
    return out


def error_reply(exc: InfernoError, message: str) -> Reply:
    """The answer to ``exc``: its status, ``{"error": message}``, and the headers its kind calls for."""
    headers = [JSON]
    if isinstance(exc, ServiceUnavailableError):
        headers.append((b"retry-after", str(max(1, round(exc.retry_after_s))).encode()))
    if isinstance(exc, UnauthorizedError):
        headers.append((b"www-authenticate", b"Bearer"))
    if isinstance(exc, MethodNotAllowed):
        headers.append((b"allow", exc.allow.encode()))
    return exc.http_status, error_body(message), headers


def with_parameters(payload: bytes, extra: dict[str, str], params: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    """An encoded infer response with response-level ``parameters`` added to its JSON header
    (the binary tensors after it, if any, unchanged; the header length updated)."""
    key = "inference-header-content-length"
    length = int(extra.get(key, len(payload)))
    doc = orjson.loads(payload[:length])
    doc["parameters"] = params
    header = orjson.dumps(doc)
    if key in extra:
        return header + payload[length:], {**extra, key: str(len(header))}
    return header, extra
