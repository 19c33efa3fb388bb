"""Peer (e): Ray Serve, one replica behind Ray's HTTP proxy, batching with ``@serve.batch``.

This process starts a private local Ray cluster (``ray.init(address="local", num_cpus=1)``:
pinned to one core, Ray is given one CPU, which its one replica takes), deploys a FastAPI
ingress, and serves until SIGTERM, when it shuts Serve and the cluster down. A request goes
proxy actor → router → replica actor, where ``@serve.batch`` gathers requests into one
runtime call.

Settings, and why:
    ``max_batch_size``: ``benchmarks/serving.py`` passes the raw runtime's best batch size
    (the batch is padded to its longest sentence, exactly as in the raw sweep); 64, the
    largest concurrency measured, when run by hand.
    ``batch_wait_timeout_s=0``: greedy. Ray's queue waits for the first request, then takes
    whatever else is queued; under load that is everything that arrived during the previous
    batch, and a lone request never waits.
    ``max_ongoing_requests=128``: Ray's default (5) lets at most five requests reach the
    replica, so batches could never grow past five and the rest would queue in the proxy;
    128 is above both the largest batch and the largest concurrency measured.
    The runtime call runs in a one-thread executor, so the replica's event loop keeps taking
    requests (and the next batch keeps filling) while the model runs.
    Access logs are off: Ray writes one log line per request otherwise.

    python benchmarks/peers/ray_peer.py --repository model_repository --port 8003
"""

# No ``from __future__ import annotations`` here: Ray ships this class to the replica by value,
# with only the globals its code uses, so FastAPI could not resolve a string "Request" there.
import asyncio
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import _common as oip
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response
from ray import serve

JSON = "application/json"
api = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


@serve.deployment
@serve.ingress(api)
class Embedder:
    def __init__(self, folder: str, threads: int, max_batch_size: int, wait_s: float) -> None:
        self.runner = oip.load_runner(Path(folder), threads)
        self.metadata = oip.metadata_body(Path(folder))
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="runtime")
        self.embed_batch.set_max_batch_size(max_batch_size)
        self.embed_batch.set_batch_wait_timeout_s(wait_s)

    @api.get(oip.READY_PATH)
    async def ready(self) -> Response:
        return Response(status_code=200)

    @api.get(oip.METADATA_PATH)
    async def model_metadata(self) -> Response:
        return Response(self.metadata, media_type=JSON)

    @api.post(oip.INFER_PATH)
    async def infer(self, request: Request) -> Response:
        try:
            texts = oip.parse(await request.body())
        except oip.BadRequest as exc:
            return Response(oip.error_body(str(exc)), status_code=400, media_type=JSON)
        rows = await self.embed_batch(texts)
        return Response(oip.response_body(rows), media_type=JSON)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.0)
    async def embed_batch(self, requests: list[list[str]]) -> list[np.ndarray]:
        texts = [t for r in requests for t in r]
        loop = asyncio.get_running_loop()
        rows = await loop.run_in_executor(self.pool, oip.embed, self.runner, texts)
        return np.split(rows, np.cumsum([len(r) for r in requests])[:-1])


def main() -> None:
    p = oip.parser(__doc__.splitlines()[0])
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument("--batch-wait-timeout-s", type=float, default=0.0)
    p.add_argument("--max-ongoing-requests", type=int, default=128)
    p.add_argument("--num-cpus", type=int, default=1, help="CPUs Ray may schedule on")
    args = p.parse_args()
    folder = oip.plan_folder(args.repository)
    # Ray's workers are fresh interpreters: they must find _common where this script does.
    here = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))

    import ray

    ray.init(
        address="local",
        num_cpus=args.num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="WARNING",
    )

    def stop(_signum: int, _frame: Any) -> None:
        serve.shutdown()
        ray.shutdown()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logging = {"log_level": "WARNING", "enable_access_log": False}
    serve.start(http_options={"host": args.host, "port": args.port}, logging_config=logging)
    app = Embedder.options(
        max_ongoing_requests=args.max_ongoing_requests,
        ray_actor_options={"num_cpus": 1},
        logging_config=logging,
    ).bind(str(folder), args.threads, args.max_batch_size, args.batch_wait_timeout_s)
    serve.run(app, route_prefix="/")
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
