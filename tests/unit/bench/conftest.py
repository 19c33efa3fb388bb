"""A fake Open Inference Protocol server on loopback, in a thread, for the load-loop tests.

Starlette on uvicorn (the serving stack's own dependencies), bound to 127.0.0.1 on a free port.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

METADATA = {
    "name": "fake",
    "versions": ["1", "2"],
    "platform": "test",
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}],
}


@dataclass
class Behaviour:
    """What the fake does: fail every n-th request, sleep, require a token; what it saw."""

    fail_every: int = 0
    delay_s: float = 0.0
    token: str | None = None
    infer_paths: list[str] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    """Headers (lower-case names) and body of the first few infer requests."""
    count: int = 0


@dataclass
class FakeServer:
    url: str
    behaviour: Behaviour


def _app(behaviour: Behaviour) -> Starlette:
    def authorized(request: Request) -> bool:
        return behaviour.token is None or (
            request.headers.get("authorization") == f"Bearer {behaviour.token}"
        )

    async def metadata(request: Request) -> Response:
        if request.path_params["model"] == "moved":  # must not be followed: elsewhere is off limits
            return RedirectResponse("http://127.0.0.1:9/v2/models/fake", status_code=307)
        if request.path_params["model"] != "fake":
            return JSONResponse({"error": "unknown model"}, status_code=404)
        if not authorized(request):
            return JSONResponse({"error": "missing token"}, status_code=401)
        return JSONResponse(METADATA)

    async def infer(request: Request) -> Response:
        body = await request.body()
        behaviour.count += 1
        if len(behaviour.infer_paths) < 5:
            behaviour.infer_paths.append(request.url.path)
            behaviour.requests.append((dict(request.headers), body))
        if not authorized(request):
            return JSONResponse({"error": "missing token"}, status_code=401)
        if behaviour.delay_s:
            await asyncio.sleep(behaviour.delay_s)
        if behaviour.fail_every and behaviour.count % behaviour.fail_every == 0:
            return JSONResponse({"error": f"busy #{behaviour.count}"}, status_code=503)
        return JSONResponse({"model_name": "fake", "outputs": []})

    return Starlette(
        routes=[
            Route("/v2/models/{model}", metadata),
            Route("/v2/models/{model}/versions/{version}", metadata),
            Route("/v2/models/{model}/infer", infer, methods=["POST"]),
            Route("/v2/models/{model}/versions/{version}/infer", infer, methods=["POST"]),
        ]
    )


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    behaviour = Behaviour()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        _app(behaviour), log_level="error", access_log=False, timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.01)
    assert server.started, "the fake server did not start"
    try:
        yield FakeServer(f"http://127.0.0.1:{port}", behaviour)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
