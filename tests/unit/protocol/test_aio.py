"""The lean HTTP/1.1 client against scripted servers on loopback: framing, keep-alive, timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from inferno.protocol.address import Address
from inferno.protocol.aio import HttpSender, build_request, fetch

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
ADDRESS = Address("127.0.0.1", 0, False)


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + (await reader.readexactly(length) if length else b"")


def _serve(answers: list[bytes], *, connections: list[int] | None = None) -> Script:
    """Answer each request on a connection with the next of ``answers`` (then close)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if connections is not None:
            connections.append(1)
        try:
            while answers:
                await _read_request(reader)
                writer.write(answers.pop(0))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return handle


async def _with_server(script: Script, body: Callable[[Address], Awaitable[object]]) -> object:
    server = await asyncio.start_server(script, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        return await asyncio.wait_for(body(Address("127.0.0.1", port, False)), 10)
    finally:
        server.close()
        await server.wait_closed()


def _run(script: Script, body: Callable[[Address], Awaitable[object]]) -> object:
    return asyncio.run(_with_server(script, body))


def test_build_request_is_the_wire_form() -> None:
    request = build_request(Address("h", 8000, False), "POST", "/v2/x", {"A": "b"}, b"{}")
    head, body = request.split(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /v2/x HTTP/1.1"
    assert "Host: h:8000" in lines and "A: b" in lines and "Content-Length: 2" in lines
    assert body == b"{}"
    assert b"Host: h\r\n" in build_request(Address("h", 80, False), "GET", "/", {})
    assert b"Host: [::1]:9\r\n" in build_request(Address("::1", 9, False), "GET", "/", {})


@pytest.mark.parametrize(
    ("answer", "status", "body"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 200, b"hello"),
        (b"HTTP/1.1 200 OK\r\ncontent-length:0\r\n\r\n", 200, b""),
        (
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"4\r\nnot \r\n5;x=1\r\nfound\r\n0\r\nX-Trailer: 1\r\n\r\n",
            404,
            b"not found",
        ),
        (b"HTTP/1.0 200 OK\r\n\r\nuntil the end", 200, b"until the end"),
        (b"HTTP/1.1 204 No Content\r\n\r\n", 204, b""),
    ],
)
def test_fetch_reads_each_framing(answer: bytes, status: int, body: bytes) -> None:
    async def body_of(address: Address) -> object:
        return await fetch(address, build_request(address, "GET", "/", {}), 5)

    assert _run(_serve([answer]), body_of) == (status, body)


def test_keep_alive_reuses_one_connection_and_reports_errors() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    busy = b'HTTP/1.1 503 Busy\r\nContent-Length: 17\r\n\r\n{"error": "full"}'
    connections: list[int] = []

    async def body(address: Address) -> object:
        request = build_request(address, "POST", "/infer", {}, b"{}")
        sender = HttpSender(address, (request,), timeout_s=5)
        try:
            return [await sender.send(i) for i in range(4)]
        finally:
            await sender.aclose()

    results = _run(_serve([ok, ok, busy, ok], connections=connections), body)
    assert results == [None, None, ("HTTP 503", '{"error": "full"}'), None]
    assert len(connections) == 1


def test_connection_close_and_early_close_reconnect() -> None:
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    connections: list[int] = []
    answers = [closing, closing, closing]

    async def body(address: Address) -> object:
        sender = HttpSender(address, (build_request(address, "GET", "/", {}),), timeout_s=5)
        try:
            return [await sender.send(i) for i in range(3)]
        finally:
            await sender.aclose()

    assert _run(_serve(answers, connections=connections), body) == [None, None, None]
    assert len(connections) == 3


def test_a_server_that_hangs_up_or_talks_nonsense_is_an_error() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.close()

    async def body(address: Address) -> object:
        sender = HttpSender(address, (build_request(address, "GET", "/", {}),), timeout_s=5)
        try:
            return await sender.send(0)
        finally:
            await sender.aclose()

    kind, message = _run(hang_up, body)  # type: ignore[misc]
    assert kind in ("bad response", "ConnectionResetError") and message
    nonsense = _run(_serve([b"SSH-2.0-OpenSSH\r\n\r\n"]), body)
    assert nonsense == ("bad response", "not an HTTP status line: b'SSH-2.0-OpenSSH'")


def test_a_silent_server_times_out_and_the_connection_is_dropped() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(5)
        writer.close()

    async def body(address: Address) -> object:
        sender = HttpSender(address, (build_request(address, "GET", "/", {}),), timeout_s=0.2)
        try:
            failure = await sender.send(0)
            return failure, len(sender.idle), len(sender.busy)
        finally:
            await sender.aclose()

    assert _run(silent, body) == (("timeout", "no answer within 0.2 s"), 0, 0)


def test_refused_connection_names_the_error() -> None:
    import socket

    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = Address("127.0.0.1", port, False)

    async def body() -> object:
        sender = HttpSender(address, (build_request(address, "GET", "/", {}),), timeout_s=2)
        try:
            return await sender.send(0)
        finally:
            await sender.aclose()

    kind, _message = asyncio.run(body())  # type: ignore[misc]
    assert kind == "ConnectionRefusedError"
