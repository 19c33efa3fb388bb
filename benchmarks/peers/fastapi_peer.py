"""Peer (c): a plain FastAPI app under uvicorn, one runtime call per request, no batching.

What a careful user writes without a serving framework: read the body, parse it with orjson,
call the runner, answer orjson bytes (no pydantic models: they would only add cost).

``--handler inline`` (the default) runs the call inside an ``async def`` endpoint, on the
event loop: on one core this is the fastest (no thread hand-off per request), and it keeps
the runtime to one call at a time, which a single runner needs anyway. ``--handler thread``
runs it in Starlette's thread pool behind a lock, which lets the event loop parse the next
requests while the model runs when a second core is free.

    python benchmarks/peers/fastapi_peer.py --repository model_repository --port 8001
"""

from __future__ import annotations

import threading

import _common as oip
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

JSON = "application/json"


def build_app(runner: object, metadata: bytes, handler: str) -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    lock = threading.Lock()

    def run(texts: list[str]) -> bytes:
        with lock:
            return oip.response_body(oip.embed(runner, texts))

    @app.get(oip.READY_PATH)
    async def ready() -> Response:
        return Response(status_code=200)

    @app.get(oip.METADATA_PATH)
    async def model_metadata() -> Response:
        return Response(metadata, media_type=JSON)

    @app.post(oip.INFER_PATH)
    async def infer(request: Request) -> Response:
        try:
            texts = oip.parse(await request.body())
        except oip.BadRequest as exc:
            return Response(oip.error_body(str(exc)), status_code=400, media_type=JSON)
        body = run(texts) if handler == "inline" else await run_in_threadpool(run, texts)
        return Response(body, media_type=JSON)

    return app


def main() -> None:
    p = oip.parser(__doc__.splitlines()[0])
    p.add_argument("--handler", choices=["inline", "thread"], default="inline")
    args = p.parse_args()
    folder = oip.plan_folder(args.repository)
    runner = oip.load_runner(folder, args.threads)
    app = build_app(runner, oip.metadata_body(folder), args.handler)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
