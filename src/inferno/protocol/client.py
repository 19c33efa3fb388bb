"""The synchronous v2 client: ``http.client`` connections to one server, kept for reuse.

Used by ``inferno monitor``'s poller and by the cascade's cloud client (the load generator's
asynchronous client is :mod:`inferno.protocol.aio`). Only the given host is contacted:
``http.client`` reads no proxy variable and follows no redirect, so a 3xx is answered as
the status it is. Safe to share between threads: each exchange takes a kept connection of
its own (or opens one), and gives it back when the server keeps it open.
"""

from __future__ import annotations

import http.client
import queue
from dataclasses import dataclass
from urllib.parse import urlsplit

from inferno.protocol.address import HINT, unreachable

IDLE_CONNECTIONS = 8
"""Connections kept open for reuse; more concurrent callers open (and then drop) their own."""


class Unreachable(Exception):
    """No HTTP answer came: refused, timed out, reset. ``str()`` is the one line saying so.

    Callers turn it into their own error (the monitor's UserInputError, the cascade's
    CloudError), with :meth:`line` when they word it their way.

    Attributes:
        url: the server. cause: what the socket raised. timeout_s: the client's timeout.
    """

    def __init__(self, url: str, cause: BaseException, timeout_s: float) -> None:
        self.url = url
        self.cause = cause
        self.timeout_s = timeout_s
        super().__init__(self.line())

    def line(self, subject: str = "", hint: str = HINT) -> str:
        return unreachable(self.url, self.cause, self.timeout_s, subject=subject, hint=hint)


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    """Lower-cased names."""
    body: bytes


class Client:
    """Requests to one server, ``http(s)://host[:port]`` (checked by the caller).

    Args:
        url: the server. timeout_s: most seconds to wait for a connection or an answer.
        headers: sent with every request (``Authorization``, ``Accept``, ...).
    """

    def __init__(self, url: str, timeout_s: float, headers: dict[str, str] | None = None) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.headers = dict(headers or {})
        parts = urlsplit(url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._idle: queue.LifoQueue[http.client.HTTPConnection] = queue.LifoQueue(IDLE_CONNECTIONS)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Response:
        """One HTTP exchange on a kept connection; one retry on a fresh connection when a
        kept one turns out to be closed by the server. Any HTTP status is returned.

        Raises:
            Unreachable: no connection, or no answer within ``timeout_s``.
        """
        all_headers = {**self.headers, **(headers or {})}
        for attempt in (0, 1):
            conn, reused = self._connection()
            try:
                conn.request(method, path, body=body, headers=all_headers)
                reply = conn.getresponse()
                data = reply.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                conn.close()
                if reused and attempt == 0:
                    continue
                raise Unreachable(self.url, exc, self.timeout_s) from None
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise Unreachable(self.url, exc, self.timeout_s) from None
            if reply.will_close:
                conn.close()
            else:
                self._keep(conn)
            return Response(reply.status, {k.lower(): v for k, v in reply.getheaders()}, data)
        raise AssertionError("unreachable: the loop returns or raises")

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        try:
            return self._idle.get_nowait(), True
        except queue.Empty:
            kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            return kind(self._host, self._port, timeout=self.timeout_s), False

    def _keep(self, conn: http.client.HTTPConnection) -> None:
        try:
            self._idle.put_nowait(conn)
        except queue.Full:
            conn.close()

    def close(self) -> None:
        """Close the kept connections (the client opens new ones if used again)."""
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return
