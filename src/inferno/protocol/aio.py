"""The asynchronous v2 client: lean HTTP/1.1 over asyncio, keep-alive connections, pre-built requests.

Made for the load generator (``inferno bench``), which also reads the model's metadata
through it (:func:`fetch`). Each request is sent as bytes built once before the run (request
line, headers and body), and each answer is read by a small ``asyncio.Protocol`` that finds
the status line and the ``Content-Length`` (or chunked framing) and nothing more, so one
process of the generator costs far less per request than the server does. It never follows redirects, never decompresses and
keeps no cookies. Timeouts are swept a few times a second rather than armed per request.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import Mapping

from inferno._version import __version__
from inferno.protocol.address import Address

Failure = tuple[str, str]
"""``(kind, message)`` of a request that did not succeed, e.g. ``("HTTP 503", "queue full")``."""

_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)")
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:[^\r\n]*chunked")
_CLOSE = re.compile(rb"\r\nconnection:[^\r\n]*close")
MAX_HEAD = 64 * 1024
SWEEP_S = 0.05
"""How often in-flight requests are checked against their timeout (its granularity)."""


class ResponseError(Exception):
    """The server's answer cannot be read as HTTP/1.1 (or ended early)."""


def build_request(
    address: Address,
    method: str,
    path: str,
    headers: Mapping[str, str],
    body: bytes = b"",
    agent: str = "inferno-bench",
) -> bytes:
    """The whole request as it goes on the wire: request line, headers, ``Content-Length``, body.

    ``agent`` names the client in ``User-Agent`` (with inferno's version).
    """
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: {address.host_header}",
        f"User-Agent: {agent}/{__version__}",
    ]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time (no pipelining)."""

    def __init__(self, keep_body: bool = False) -> None:
        self.keep_body = keep_body
        """Return a 200's body too (the load loops only need the bodies of errors)."""
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.started = 0.0
        self.closed = False
        self._head_end = -1
        self._length: int | None = None  # body length; None: chunked or until the end
        self._chunked = False
        self._keep = True

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is None:  # nothing was asked: a server talking out of turn
            self.close()
            return
        try:
            answer = self._parse()
        except ResponseError as exc:
            self._fail(exc)
            return
        if answer is not None:
            self._finish(answer)

    def eof_received(self) -> bool | None:
        if (
            self.waiter is not None
            and self._head_end >= 0
            and self._length is None
            and not self._chunked
        ):
            self._finish(
                (self._status(), bytes(self.buffer[self._head_end :]))
            )  # read until the end
            self._keep = False
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(
                exc
                if isinstance(exc, OSError)
                else ResponseError("the server closed the connection")
            )
        self.waiter = None

    # -- requests ------------------------------------------------------------------------------

    def send(self, request: bytes) -> asyncio.Future[tuple[int, bytes]]:
        """Write ``request``; the future gets ``(status, body)`` (a 200's body only with ``keep_body``)."""
        if self.transport is None or self.waiter is not None:
            raise ResponseError("connection not open, or busy with another request")
        loop = asyncio.get_running_loop()
        self.waiter = loop.create_future()
        self.started = time.perf_counter()
        self.buffer.clear()
        self._head_end, self._length, self._chunked, self._keep = -1, None, False, True
        self.transport.write(request)
        return self.waiter

    @property
    def reusable(self) -> bool:
        return not self.closed and self._keep and self.waiter is None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def expire(self, now: float, timeout_s: float) -> None:
        """Fail the request in flight if it is older than ``timeout_s``; the connection closes."""
        if self.waiter is not None and not self.waiter.done() and now - self.started > timeout_s:
            self.waiter.set_exception(TimeoutError())
            self.waiter = None
            self.close()

    # -- parsing -------------------------------------------------------------------------------

    def _status(self) -> int:
        head = self.buffer[: self._head_end - 4]  # without the blank line
        if head[:5] != b"HTTP/" or len(head) < 12 or not head[9:12].isdigit():
            raise ResponseError(f"not an HTTP status line: {bytes(head[:40])!r}")
        return int(head[9:12])

    def _parse(self) -> tuple[int, bytes] | None:
        if self._head_end < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD:
                    raise ResponseError(f"response headers over {MAX_HEAD} bytes")
                return None
            self._head_end = end + 4
            head = bytes(self.buffer[:end]).lower()
            status = self._status()
            self._keep = _CLOSE.search(head) is None and head.startswith(b"http/1.1")
            if _CHUNKED.search(head):
                self._chunked = True
            else:
                match = _LENGTH.search(head)
                if match is not None:
                    self._length = int(match.group(1))
                elif status in (204, 304) or 100 <= status < 200:
                    self._length = 0
        if self._chunked:
            return self._parse_chunked()
        if self._length is None:
            return None  # until the end of the connection
        total = self._head_end + self._length
        if len(self.buffer) < total:
            return None
        if len(self.buffer) > total:
            raise ResponseError("more bytes than the response's Content-Length")
        status = self._status()
        keep = self.keep_body or status != 200
        return status, bytes(self.buffer[self._head_end :]) if keep else b""

    def _parse_chunked(self) -> tuple[int, bytes] | None:
        position, body = self._head_end, bytearray()
        buffer = self.buffer
        while True:
            line_end = buffer.find(b"\r\n", position)
            if line_end < 0:
                return None
            size_text = bytes(buffer[position:line_end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError as exc:
                raise ResponseError(f"bad chunk size {size_text[:20]!r}") from exc
            position = line_end + 2
            if size == 0:
                trailer_end = buffer.find(b"\r\n", position)
                while trailer_end > position:  # trailers: skip them
                    position = trailer_end + 2
                    trailer_end = buffer.find(b"\r\n", position)
                if trailer_end < 0:
                    return None
                return self._status(), bytes(body)
            if len(buffer) < position + size + 2:
                return None
            body += buffer[position : position + size]
            position += size + 2

    def _finish(self, answer: tuple[int, bytes]) -> None:
        waiter, self.waiter = self.waiter, None
        if not self._keep:
            self.close()
        if waiter is not None and not waiter.done():
            waiter.set_result(answer)

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        self.close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)


async def connect(address: Address, keep_body: bool = False) -> Connection:
    """Open one connection (TLS for https)."""
    loop = asyncio.get_running_loop()
    context = ssl.create_default_context() if address.tls else None
    _, protocol = await loop.create_connection(
        lambda: Connection(keep_body),
        address.host,
        address.port,
        ssl=context,
        server_hostname=address.host if context else None,
    )
    return protocol


class HttpSender:
    """Sends pre-built requests over a pool of keep-alive connections, opened as needed.

    A closed loop of N workers holds at most N connections; an open loop opens one whenever
    every open connection is busy (``limit`` bounds the total).
    """

    def __init__(self, address: Address, requests: tuple[bytes, ...], timeout_s: float) -> None:
        self.address = address
        self.requests = requests
        self.timeout_s = timeout_s
        self.idle: list[Connection] = []
        self.busy: set[Connection] = set()
        self.sweeper: asyncio.Task[None] | None = None

    async def send(self, index: int) -> Failure | None:
        """Request ``index`` (cycled); None on HTTP 200, else ``(kind, message)``."""
        if self.sweeper is None:
            self.sweeper = asyncio.create_task(self._sweep())
        conn: Connection | None = None
        try:
            while self.idle:
                candidate = self.idle.pop()
                if candidate.reusable:
                    conn = candidate
                    break
            if conn is None:
                try:
                    conn = await asyncio.wait_for(connect(self.address), self.timeout_s)
                except OSError as exc:
                    await asyncio.sleep(0.001)  # a refused connect must not spin the loop
                    return type(exc).__name__, (str(exc) or type(exc).__name__)[:200]
            self.busy.add(conn)
            status, body = await conn.send(self.requests[index % len(self.requests)])
        except TimeoutError:
            return "timeout", f"no answer within {self.timeout_s:g} s"
        except ResponseError as exc:
            return "bad response", str(exc)[:200]
        except OSError as exc:
            return type(exc).__name__, (str(exc) or type(exc).__name__)[:200]
        finally:
            if conn is not None:
                self.busy.discard(conn)
                if conn.reusable:
                    self.idle.append(conn)
                elif not conn.closed and conn.waiter is not None:
                    conn.close()  # cancelled mid-request: the answer would come out of turn
        if status == 200:
            return None
        return f"HTTP {status}", " ".join(body[:200].decode("utf-8", "replace").split())

    async def _sweep(self) -> None:
        period = min(SWEEP_S, self.timeout_s / 4)
        while True:
            await asyncio.sleep(period)
            now = time.perf_counter()
            for conn in list(self.busy):
                conn.expire(now, self.timeout_s)

    async def aclose(self) -> None:
        if self.sweeper is not None:
            self.sweeper.cancel()
            await asyncio.gather(self.sweeper, return_exceptions=True)
        for conn in [*self.idle, *self.busy]:
            conn.close()
        self.idle.clear()
        self.busy.clear()


async def fetch(address: Address, request: bytes, timeout_s: float) -> tuple[int, bytes]:
    """One request on a connection of its own: ``(status, body)``.

    Raises:
        OSError, TimeoutError, ResponseError: the server cannot be reached or answered badly.
    """

    async def exchange() -> tuple[int, bytes]:
        conn = await connect(address, keep_body=True)
        try:
            return await conn.send(request)
        finally:
            conn.close()

    return await asyncio.wait_for(exchange(), timeout_s)
