"""A fake Open Inference Protocol server on loopback, in a thread, for the load-loop tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

METADATA = {
    "name": "fake",
    "versions": ["1", "2"],
    "platform": "test",
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}],
}


@dataclass
class Behaviour:
    """What the fake does: fail every n-th request, sleep, require a token."""

    fail_every: int = 0
    delay_s: float = 0.0
    token: str | None = None
    infer_paths: list[str] = field(default_factory=list)
    count: int = 0


@dataclass
class FakeServer:
    url: str
    behaviour: Behaviour


def _app(behaviour: Behaviour) -> web.Application:
    def authorized(request: web.Request) -> bool:
        return behaviour.token is None or (
            request.headers.get("Authorization") == f"Bearer {behaviour.token}"
        )

    async def metadata(request: web.Request) -> web.Response:
        if request.match_info["model"] == "moved":  # must not be followed: elsewhere is off limits
            raise web.HTTPTemporaryRedirect("http://127.0.0.1:9/v2/models/fake")
        if request.match_info["model"] != "fake":
            return web.json_response({"error": "unknown model"}, status=404)
        if not authorized(request):
            return web.json_response({"error": "missing token"}, status=401)
        return web.json_response(METADATA)

    async def infer(request: web.Request) -> web.Response:
        await request.read()
        behaviour.count += 1
        if len(behaviour.infer_paths) < 5:
            behaviour.infer_paths.append(request.path)
        if not authorized(request):
            return web.json_response({"error": "missing token"}, status=401)
        if behaviour.delay_s:
            await asyncio.sleep(behaviour.delay_s)
        if behaviour.fail_every and behaviour.count % behaviour.fail_every == 0:
            return web.json_response({"error": f"busy #{behaviour.count}"}, status=503)
        return web.json_response({"model_name": "fake", "outputs": []})

    app = web.Application()
    app.router.add_get("/v2/models/{model}", metadata)
    app.router.add_get("/v2/models/{model}/versions/{version}", metadata)
    app.router.add_post("/v2/models/{model}/infer", infer)
    app.router.add_post("/v2/models/{model}/versions/{version}/infer", infer)
    return app


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    behaviour = Behaviour()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(_app(behaviour), access_log=None, shutdown_timeout=0.5)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield FakeServer(f"http://127.0.0.1:{port}", behaviour)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
