"""HTTP transport: uvicorn's httptools protocol with the connection limits it lacks.

uvicorn arms its keep-alive timer only after a response, so a connection that never sends
a byte, or sends a header line now and then (slowloris), stays open for ever; and it has no
cap on connections short of ``limit_concurrency``, which answers 503 to health probes too.
This protocol adds, per connection:

- an idle timeout from the moment it opens (not only after a response);
- a deadline for a request's headers, from its first byte, answered 408 then closed;
- a deadline for its body, from the end of its headers;

an early answer: once a request's headers are in, the app may answer it (a full queue's
503) before its body is read; the answer is written here, with no ASGI cycle or task, and
the body is discarded as it arrives, so a refusal under overload costs a small fraction of
a served request; and, per server, a cap on open connections. At the cap, a new connection makes room by
closing the connection idle longest (no request in flight: an idle keep-alive, a fresh one
that sent nothing, a slowloris); only when every connection has a request in flight is the
new one answered 503 and closed. So a prober that connects and asks at once is always
served, however many idle sockets a client holds open.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from inferno.protocol.codec import error_body


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int
    keep_alive_timeout_s: float
    header_timeout_s: float
    body_timeout_s: float


Headers = list[tuple[bytes, bytes]]
Admission = Callable[[bytes, bytes, Headers], tuple[bytes, bytes] | None]
"""``(method, raw URL, headers) →`` the whole HTTP response to send now, framed for a
connection kept alive and for one closed (see :func:`frame`), or None to go on."""


def guarded_protocol(limits: ConnectionLimits, admission: Admission | None = None) -> type[HttpToolsProtocol]:
    """An httptools protocol class bound to ``limits`` (uvicorn takes the class as ``http=``)."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,),
                {"limits": limits, "admission": staticmethod(admission) if admission else None})


def frame(status: int, body: bytes, headers: Headers, keep_alive: bool) -> bytes:
    """A whole HTTP/1.1 response, as bytes."""
    lines = [b"HTTP/1.1 %d %s" % (status, HTTPStatus(status).phrase.encode())]
    lines += [name + b": " + value for name, value in headers]
    lines.append(b"content-length: %d" % len(body))
    if not keep_alive:
        lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _closing_error(status: int, message: str, extra: Headers | None = None) -> bytes:
    """A JSON error answer, for a connection closed right after it."""
    return frame(status, error_body(message), [(b"content-type", b"application/json"), *(extra or [])], False)


_FULL = _closing_error(503, "connections: every open connection has a request in flight; retry shortly",
                       [(b"retry-after", b"1")])


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    limits: ConnectionLimits
    admission: Admission | None = None
    _sweeping: asyncio.TimerHandle | None = None
    """The server's one deadline sweep (each server has its own subclass): a deadline is a
    float per connection, checked a few times a second, rather than a timer armed and
    cancelled for every request — cheap enough for the path that refuses requests."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout_keep_alive = self.limits.keep_alive_timeout_s  # type: ignore[assignment]  # call_later takes a float
        self._due = 0.0
        """When ``_late`` runs (loop time); 0: no deadline."""
        self._late: Callable[[], None] = self._idle_late
        self._last_active = 0.0
        self._discarding: bool | None = None
        """Answered early: the body is dropped as it comes; the value is whether to keep alive."""

    # -- connection ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._last_active = self.loop.time()
        if len(self.connections) > self.limits.max_connections and not self._make_room():
            self.connections.discard(self)
            transport.write(_FULL)
            transport.close()
            return
        self._arm(self.limits.keep_alive_timeout_s, self._idle_late)  # idle from the first moment

    def connection_lost(self, exc: Exception | None) -> None:
        self._due = 0.0
        super().connection_lost(exc)

    def _make_room(self) -> bool:
        """Close the connection idle longest; False when every other one has a request in flight."""
        idle = [c for c in self.connections
                if c is not self and isinstance(c, GuardedHttpToolsProtocol) and c.idle]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c._last_active)
        oldest.connections.discard(oldest)  # counted out now: its close completes later
        oldest.transport.close()
        return True

    @property
    def idle(self) -> bool:
        """No request in flight: nothing the app is working on, nothing queued behind it."""
        return (self.cycle is None or self.cycle.response_complete) and not self.pipeline

    def send_400_response(self, msg: str) -> None:
        # what the parser refused (raw non-ASCII in the target, a broken request line), as JSON
        # like every other refusal; uvicorn's own answer is text/plain
        self.transport.write(_closing_error(400, f"request: expected valid HTTP/1.1, got an "
                                                 f"invalid request ({msg.rstrip('.')})"))
        self.transport.close()

    # -- request deadlines ---------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._last_active = self.loop.time()
        if self._late == self._idle_late:
            self._due = 0.0
        super().data_received(data)
        # bytes that start no request (stray CRLFs): idle again
        if (not self._due and self.timeout_keep_alive_task is None and self.idle
                and not self.transport.is_closing()):
            self._arm(self.limits.keep_alive_timeout_s, self._idle_late)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm(self.limits.header_timeout_s, self._headers_late)

    def on_headers_complete(self) -> None:
        self._arm(self.limits.body_timeout_s, self._body_late)
        # only when nothing is in flight before it: a pipelined request's answer must wait its turn
        if self.admission is not None and (self.cycle is None or self.cycle.response_complete) and not self.pipeline:
            answer = self.admission(self.parser.get_method(), self.url, self.headers)
            if answer is not None:
                keep_alive = self.parser.should_keep_alive() and self.parser.get_http_version() == "1.1"
                self._discarding = keep_alive
                self.transport.write(answer[0] if keep_alive else answer[1])
                return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._discarding is None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._due = 0.0
        if self._discarding is None:
            super().on_message_complete()
            return
        keep_alive, self._discarding = self._discarding, None
        if not keep_alive:
            self.transport.close()
        else:
            self._arm(self.limits.keep_alive_timeout_s, self._idle_late)

    def on_response_complete(self) -> None:
        self._last_active = self.loop.time()
        super().on_response_complete()

    def _arm(self, seconds: float, late: Callable[[], None]) -> None:
        self._due = self.loop.time() + seconds
        self._late = late
        cls = type(self)
        if cls._sweeping is None:
            cls._sweeping = self.loop.call_later(self._sweep_every(), self._sweep)

    def _sweep_every(self) -> float:
        limits = self.limits
        return min(0.25, limits.keep_alive_timeout_s / 4, limits.header_timeout_s / 4, limits.body_timeout_s / 4)

    def _sweep(self) -> None:
        cls = type(self)
        cls._sweeping = None
        now = self.loop.time()
        for c in tuple(self.connections):
            if isinstance(c, GuardedHttpToolsProtocol) and c._due and c._due <= now:
                c._due = 0.0
                c._late()
        if self.connections:
            cls._sweeping = self.loop.call_later(self._sweep_every(), self._sweep)

    def _idle_late(self) -> None:
        if self.idle and not self.transport.is_closing():
            self.transport.close()

    def _headers_late(self) -> None:
        if not self.transport.is_closing():
            self.transport.write(_closing_error(
                408,
                f"request headers: expected complete within {self.limits.header_timeout_s:g} s of the "
                "request's first byte, got them still incomplete"))
            self.transport.close()

    def _body_late(self) -> None:
        # the app waiting on the body sees a disconnect; no answer can be framed mid-body
        if not self.transport.is_closing():
            self.transport.close()
