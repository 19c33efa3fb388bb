"""inferno's HTTP/2 gRPC transport against the real ``grpc.aio`` client, with a small servicer.

The servicer speaks Triton's messages (``tritonclient.grpc.service_pb2``) but does its own
simple things (echo, abort, sleep), so that the transport is tested apart from the server:
framing, flow control both ways, status and trailers, deadlines, streaming, limits, broken
peers and shutdown. ``tests/e2e/serving/test_grpc*.py`` run the whole server over it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import grpc
import hpack
import pytest
from tritonclient.grpc import service_pb2

from inferno.serving.grpc_call import methods, parse_timeout, percent_encoded
from inferno.serving.grpc_transport import GrpcServer
from inferno.serving.http2 import GOAWAY, PREFACE, HeaderDecoder, frame

SERVICE = "/inference.GRPCInferenceService/"
LIMIT = 4 * 2**20


class Echo:
    """ModelInfer echoes its raw input (or aborts, or sleeps, by the model name)."""

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()
        self.metadata: tuple[tuple[str, Any], ...] = ()

    async def ServerLive(self, request: Any, context: Any) -> Any:
        self.metadata = context.invocation_metadata()
        return service_pb2.ServerLiveResponse(live=True)

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        if request.model_name == "abort":
            context.set_trailing_metadata((("retry-after", "3"),))
            await context.abort(grpc.StatusCode.UNAVAILABLE, "queue full: 100% of 8 slots — é")
        if request.model_name == "sleep":
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        if request.model_name == "nap":
            await asyncio.sleep(0.3)
        if request.model_name == "crash":
            raise RuntimeError("a bug")
        response = service_pb2.ModelInferResponse(model_name=request.model_name, id=request.id)
        response.raw_output_contents.extend(request.raw_input_contents)
        return response

    async def ModelStreamInfer(self, requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        async for request in requests:
            if request.model_name == "abort":
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "stream ends here")
            yield service_pb2.ModelStreamInferResponse(
                infer_response=service_pb2.ModelInferResponse(model_name=request.model_name, id=request.id))


def _serve(test: Callable[[GrpcServer, int, Echo], Coroutine[Any, Any, None]]) -> None:
    async def main() -> None:
        echo = Echo()
        descriptor = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
        server = GrpcServer(methods(echo, descriptor, service_pb2), LIMIT, LIMIT)
        port = await server.listen("127.0.0.1", 0)
        try:
            await asyncio.wait_for(test(server, port, echo), 60)
        finally:
            await server.stop(0)

    asyncio.run(main())


def _infer(channel: grpc.aio.Channel) -> Any:
    return channel.unary_unary(SERVICE + "ModelInfer", request_serializer=service_pb2.ModelInferRequest.SerializeToString,
                               response_deserializer=service_pb2.ModelInferResponse.FromString)


def _request(model: str, payload: bytes = b"x", id: str = "1") -> Any:
    request = service_pb2.ModelInferRequest(model_name=model, id=id)
    request.raw_input_contents.append(payload)
    return request


async def _refused(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    """The status a call that must fail ended with."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code(), info.value.details()


# -- pure parts ---------------------------------------------------------------------------------


def test_grpc_timeout_units_and_malformed_values() -> None:
    assert parse_timeout("30S") == 30.0
    assert parse_timeout("100m") == pytest.approx(0.1)
    assert parse_timeout("2H") == 7200.0
    assert parse_timeout("5u") == pytest.approx(5e-6)
    for bad in ("", "S", "12", "1.5S", "-1S", "10x"):
        assert parse_timeout(bad) is None, bad


def test_grpc_message_is_percent_encoded_utf8() -> None:
    assert percent_encoded("plain text: ok") == b"plain text: ok"
    assert percent_encoded("100% é\n") == b"100%25 %C3%A9%0A"


def test_the_decoder_cache_answers_as_a_plain_decoder_does_through_table_changes() -> None:
    encoder, plain, cached = hpack.Encoder(), hpack.Decoder(), HeaderDecoder()
    base = [(":method", "POST"), (":path", SERVICE + "ModelInfer"), ("content-type", "application/grpc")]
    lists = [base, base, [*base, ("grpc-timeout", "100m")], [*base, ("grpc-timeout", "100m")],
             [*base, ("authorization", "Bearer a")], [*base, ("authorization", "Bearer b")], base]
    for i, headers in enumerate(lists):
        if i == 5:
            encoder.header_table_size = 0  # a table size update: every entry evicted
        block = encoder.encode(headers)
        assert cached.decode(block) == [tuple(h) for h in plain.decode(block, raw=False)] == headers
    repeated = encoder.encode(base)
    assert cached.decode(repeated) == cached.decode(repeated) == base


# -- calls through the real grpc client -----------------------------------------------------------


def test_unary_calls_echo_and_metadata_arrives_decoded() -> None:
    async def test(server: GrpcServer, port: int, echo: Echo) -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            for i in range(20):
                response = await _infer(channel)(_request("m", bytes([i]) * 10, str(i)))
                assert response.raw_output_contents == [bytes([i]) * 10] and response.id == str(i)
            live = channel.unary_unary(SERVICE + "ServerLive",
                                       request_serializer=service_pb2.ServerLiveRequest.SerializeToString,
                                       response_deserializer=service_pb2.ServerLiveResponse.FromString)
            assert (await live(service_pb2.ServerLiveRequest(),
                               metadata=(("authorization", "Bearer t"), ("trace-bin", b"\x00\xff")))).live
            assert ("authorization", "Bearer t") in echo.metadata and ("trace-bin", b"\x00\xff") in echo.metadata

    _serve(test)


def test_large_messages_cross_both_flow_control_windows() -> None:
    async def test(server: GrpcServer, port: int, echo: Echo) -> None:
        payload = bytes(range(256)) * (3 * 2**20 // 256)  # 3 MiB: 48 windows of 64 KiB
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            responses = await asyncio.gather(*(_infer(channel)(_request("m", payload, str(i))) for i in range(3)))
            assert all(r.raw_output_contents == [payload] for r in responses)

    _serve(test)


def test_abort_sends_the_status_details_and_trailing_metadata() -> None:
    async def test(server: GrpcServer, port: int, echo: Echo) -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await _infer(channel)(_request("abort"))
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert info.value.details() == "queue full: 100% of 8 slots — é"
            assert ("retry-after", "3") in tuple(info.value.trailing_metadata())
            with pytest.raises(grpc.aio.AioRpcError) as crash:
                await _infer(channel)(_request("crash"))
            assert crash.value.code() == grpc.StatusCode.UNKNOWN
            assert (await _infer(channel)(_request("m"))).model_name == "m"  # the channel goes on

    _serve(test)


def test_unknown_method_compression_and_oversized_messages_are_refused_by_status() -> None:
    async def test(server: GrpcServer, port: int, echo: Echo) -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            missing = channel.unary_unary(SERVICE + "NoSuchRpc", request_serializer=None, response_deserializer=None)
            assert await _refused(missing(b"")) == (grpc.StatusCode.UNIMPLEMENTED, "Method not found: "
                                                    + SERVICE + "NoSuchRpc")
            code, details = await _refused(_infer(channel)(_request("m", b"\x01" * (LIMIT + 1))))
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and str(LIMIT) in details
            code, details = await _refused(_infer(channel)(_request("m", b"\x01" * 4096),
                                                           compression=grpc.Compression.Gzip))
            assert code == grpc.StatusCode.UNIMPLEMENTED and "compressed" in details
            assert (await _infer(channel)(_request("m"))).model_name == "m"

    _serve(test)


def test_a_message_that_does_not_parse_is_internal_with_the_reason() -> None:
    async def test(server: GrpcServer, port: int, echo: Echo) -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            raw = channel.unary_unary(SERVICE + "ModelInfer", request_serializer=None, response_deserializer=None)
            code, details = await _refused(raw(b"\xff\xff\xff"))
            assert code == grpc.StatusCode.INTERNAL and "parse" in details
            stream = channel.stream_stream(SERVICE + "ModelStreamInfer", request_serializer=None,
                                           response_deserializer=None)
            with pytest.raises(grpc.aio.AioRpcError) as streamed:
                async for _ in stream(iter([_request("m").SerializeToString(), b"\xff\xff\xff"])):
                    pass
            assert streamed.value.code() == grpc.StatusCode.INTERNAL and "parse" in streamed.value.details()

    _serve(test)


def test_the_deadline_cancels_the_handler_and_answers_deadline_exceeded() -> None:
    async def test(server: GrpcServer, port: int, echo: Echo) -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await _infer(channel)(_request("sleep"), timeout=0.3)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            await asyncio.wait_for(echo.cancelled.wait(), 10)

    _serve(test)


def test_streaming_answers_each_request_in_order_and_ends_with_the_status() -> None:
    async def test(server: GrpcServer, port: int, echo: Echo) -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stream = channel.stream_stream(SERVICE + "ModelStreamInfer",
                                           request_serializer=service_pb2.ModelInferRequest.SerializeToString,
                                           response_deserializer=service_pb2.ModelStreamInferResponse.FromString)
            call = stream(iter([_request("m", id=str(i)) for i in range(5)]))
            assert [r.infer_response.id async for r in call] == [str(i) for i in range(5)]
            assert await call.code() == grpc.StatusCode.OK
            # 24 MiB through one stream: its 16 MiB window must come back as messages are taken
            big = stream(iter([_request("m", b"\x07" * 2**20, id=str(i)) for i in range(24)]))
            assert len([r async for r in big]) == 24
            aborted = stream(iter([_request("m", id="a"), _request("abort")]))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in aborted:
                    pass
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and info.value.details() == "stream ends here"

    _serve(test)


async def _raw(port: int, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection; everything the server wrote until it closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    got = await asyncio.wait_for(reader.read(), 10)  # until EOF: the server closes
    writer.close()
    return got


def _frame_types(data: bytes) -> list[int]:
    kinds, offset = [], 0
    while len(data) - offset >= 9:
        length = int.from_bytes(data[offset:offset + 3], "big")
        kinds.append(data[offset + 3])
        offset += 9 + length
    return kinds


@pytest.mark.parametrize("garbage", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # HTTP/1.1 on the gRPC port
    PREFACE + frame(4, 0, 0, b"\x00\x01\x00\x00"),  # a SETTINGS frame of 4 bytes
    PREFACE + b"\xff\xff\xff\x00\x00\x00\x00\x00\x01",  # a 16 MiB frame
    PREFACE + frame(1, 0x4 | 0x1, 1, b"\xff\xff\xff\xff"),  # a header block HPACK cannot read
    PREFACE + frame(1, 0x1, 2, b"\x88"),  # a client stream with an even id
    PREFACE + frame(9, 0x4, 1, b"\x88"),  # CONTINUATION without HEADERS
])
def test_a_broken_peer_gets_goaway_and_the_server_serves_the_next(garbage: bytes) -> None:
    async def test(server: GrpcServer, port: int, echo: Echo) -> None:
        answer = await _raw(port, garbage)
        assert GOAWAY in _frame_types(answer), answer[:80]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert (await _infer(channel)(_request("m"))).model_name == "m"

    _serve(test)


def test_a_connection_that_never_sends_the_preface_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("inferno.serving.grpc_transport.PREFACE_TIMEOUT_S", 0.2)

    async def test(server: GrpcServer, port: int, echo: Echo) -> None:
        assert GOAWAY in _frame_types(await _raw(port, b""))

    _serve(test)


def test_a_peer_that_floods_pings_and_never_reads_is_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("inferno.serving.grpc_transport.MAX_UNSENT", 1024)

    async def test(server: GrpcServer, port: int, echo: Echo) -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(PREFACE)
        pings = frame(6, 0, 0, b"12345678") * 8192  # 8,192 PINGs: 139 KiB of ACKs owed per write
        with contextlib.suppress(ConnectionError):
            for _ in range(200):  # the server's ACKs pile up unread: it must hang up first
                writer.write(pings)
                await writer.drain()
                if not server.connections:
                    break
        for _ in range(100):
            if not server.connections:
                break
            await asyncio.sleep(0.05)
        assert not server.connections
        writer.close()

    _serve(test)


def test_stop_lets_calls_in_flight_finish_and_refuses_new_connections() -> None:
    async def test(server: GrpcServer, port: int, echo: Echo) -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            nap = asyncio.ensure_future(_infer(channel)(_request("nap"), timeout=10))
            await asyncio.sleep(0.1)
            assert not nap.done()
            await server.stop(10)
            assert (await nap).model_name == "nap"  # in flight when stop began: finished
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0  # no longer listening

    _serve(test)


def test_frames_are_length_type_flags_and_stream() -> None:
    assert frame(0, 1, 3, b"ab") == b"\x00\x00\x02\x00\x01\x00\x00\x00\x03ab"
    assert struct.unpack(">I", frame(8, 0, 0, b"\x00\x00\x00\x01")[5:9])[0] == 0
