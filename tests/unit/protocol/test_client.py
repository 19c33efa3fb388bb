"""The synchronous v2 client against a real HTTP/1.1 server on loopback: keep-alive, the retry
on a connection the server closed, no proxy, no redirect, and the one unreachable line."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from inferno.protocol.address import unreachable
from inferno.protocol.client import Client, Unreachable


class _Server(ThreadingHTTPServer):
    connections = 0
    paths: list[str]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    server: _Server

    def log_message(self, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1

    def do_GET(self) -> None:
        self.server.paths.append(self.path)
        if self.path == "/moved":
            self._send(307, b"", {"Location": "http://127.0.0.1:9/elsewhere"})
        elif self.path == "/bye":
            self._send(200, b"bye", {"Connection": "close"})
            self.close_connection = True
        else:
            self._send(200, self.headers.get("Authorization", "none").encode())

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[_Server]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.paths = []
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def _url(server: _Server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def test_connections_are_kept_and_headers_sent(server: _Server) -> None:
    client = Client(_url(server), 5, {"Authorization": "Bearer t"})
    assert [client.request("GET", "/a").body for _ in range(3)] == [b"Bearer t"] * 3
    assert server.connections == 1
    assert client.request("GET", "/bye").body == b"bye"  # the server closes: the next one opens anew
    assert client.request("GET", "/a", headers={"Authorization": "x"}).body == b"x"
    assert server.connections == 2
    client.close()


def test_a_kept_connection_the_server_dropped_is_retried_once(server: _Server) -> None:
    client = Client(_url(server), 5)
    client.request("GET", "/a")
    for conn in list(client._idle.queue):  # the server's side went away while idle
        assert conn.sock is not None
        conn.sock.shutdown(socket.SHUT_RDWR)
    assert client.request("GET", "/b").status == 200
    assert server.connections == 2 and server.paths == ["/a", "/b"]


def test_redirects_are_answered_not_followed_and_proxies_ignored(
    server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    response = Client(_url(server), 5).request("GET", "/moved")
    assert response.status == 307 and response.headers["location"].endswith("/elsewhere")
    assert server.paths == ["/moved"]


def test_an_absent_server_is_one_line() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(Unreachable) as info:
        Client(url, 2).request("GET", "/")
    assert str(info.value) == f"cannot reach {url}: connection refused — is `inferno serve` running?"
    assert info.value.line("the cloud at ", "there?") == f"cannot reach the cloud at {url}: connection refused — there?"


def test_unreachable_words_a_timeout_and_a_reason() -> None:
    assert unreachable("http://h", TimeoutError(), 5) == "cannot reach http://h: no answer within 5 s — is `inferno serve` running?"
    assert "no answer in time" in unreachable("http://h", TimeoutError())
    assert unreachable("grpc://h", "connection refused", hint="--grpc-port?") == (
        "cannot reach grpc://h: connection refused — --grpc-port?")
