"""Peer (d): LitServe with its own batching (``LitAPI(max_batch_size, batch_timeout)``).

LitServe's layout: an API server process (FastAPI/uvicorn) puts each decoded request on a
queue; one inference worker process gathers a batch (until ``max_batch_size`` requests or
``batch_timeout`` seconds after it started waiting), then runs decode_request → batch →
predict → unbatch → encode_response, and sends each response back to the API server.

Settings, and why:
    ``max_batch_size``: ``benchmarks/serving.py`` passes the raw runtime's best batch size
    (LitServe pads a batch to its longest sentence, exactly as the raw sweep does); 64, the
    largest concurrency measured, when run by hand.
    ``batch_timeout=0.001`` (1 ms): LitServe waits out the whole timeout unless the batch
    fills, so every lone request pays it; 1 ms is the slice its queue reads poll with anyway,
    and under load the requests that arrived while the worker was busy are already queued.
    ``batch_timeout=0`` would make its worker spin on an empty queue, which on one pinned core
    starves the API server.
    ``fast_queue=True`` (ZeroMQ between the processes), as LitServe's docs advise beyond
    100 requests/s (on the 2-core machine the two transports measured within noise);
    ``num_api_servers=1``: a second API process only competes for the same core.

    python benchmarks/peers/litserve_peer.py --repository model_repository --port 8002
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import _common as oip
import litserve as ls
import numpy as np
from fastapi import HTTPException
from fastapi.responses import Response


class Embedder(ls.LitAPI):
    """One request = a list of sentences; a batch is every sentence of every request.

    With ``max_batch_size=1`` LitServe skips batch/unbatch and hands predict one request.
    """

    def __init__(self, folder: str, threads: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.folder = folder
        self.threads = threads

    def setup(self, device: str) -> None:
        self.runner = oip.load_runner(Path(self.folder), self.threads)

    # Unannotated on purpose: LitServe reads the annotation to pick the endpoint's body type,
    # and without one hands over the parsed JSON.
    def decode_request(self, request) -> list[str]:  # type: ignore[no-untyped-def]
        try:
            return oip.texts_of(request)
        except oip.BadRequest as exc:
            raise HTTPException(400, str(exc)) from exc

    def batch(self, inputs: list[list[str]]) -> list[list[str]]:
        return inputs

    def predict(self, x: list[list[str]] | list[str]) -> list[np.ndarray] | np.ndarray:
        if self.max_batch_size == 1:  # LitServe's unbatched loop: x is one request's sentences
            return oip.embed(self.runner, x)
        rows = oip.embed(self.runner, [t for texts in x for t in texts])
        bounds = np.cumsum([len(texts) for texts in x])[:-1]
        return np.split(rows, bounds)

    def unbatch(self, output: list[np.ndarray]) -> list[np.ndarray]:
        return output

    def encode_response(self, output: np.ndarray) -> Response:
        # A ready Response crosses back to the API server as bytes: no FastAPI JSON encoding.
        return Response(oip.response_body(output), media_type="application/json")


def main() -> None:
    p = oip.parser(__doc__.splitlines()[0])
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument("--batch-timeout", type=float, default=0.001, help="seconds")
    p.add_argument(
        "--fast-queue",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="ZeroMQ between API server and worker",
    )
    p.add_argument("--api-server", choices=["process", "thread"], default="process")
    args = p.parse_args()
    folder = oip.plan_folder(args.repository)
    metadata = oip.metadata_body(folder)
    api = Embedder(
        str(folder),
        args.threads,
        max_batch_size=args.max_batch_size,
        batch_timeout=args.batch_timeout,
        api_path=oip.INFER_PATH,
    )
    server = ls.LitServer(
        api,
        accelerator="cpu",
        devices=1,
        workers_per_device=1,
        healthcheck_path=oip.READY_PATH,
        fast_queue=args.fast_queue,
        disable_openapi_url=True,
    )

    async def model_metadata() -> Response:
        return Response(metadata, media_type="application/json")

    server.app.add_api_route(oip.METADATA_PATH, model_metadata, methods=["GET"])
    server.run(
        host=args.host,
        port=args.port,
        num_api_servers=1,
        log_level="warning",
        generate_client_file=False,
        api_server_worker_type=args.api_server,
        access_log=False,
    )


if __name__ == "__main__":
    main()
