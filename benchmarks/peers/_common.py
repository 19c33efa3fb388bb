"""What every peer server shares, so that they differ only in how they serve.

Each peer loads the same plan (``inferno.load_plan(folder, threads)``), answers the same Open
Inference Protocol JSON on the same paths as ``inferno serve``, and encodes its responses the
same way (orjson, numpy arrays serialized natively, L2-normalized FP32 rows), so the
benchmark compares the serving stacks and nothing else:

    GET  /v2/health/ready         200 once the plan is loaded
    GET  /v2/models/minilm        model metadata (``inferno bench`` reads the inputs from it)
    POST /v2/models/minilm/infer  {"inputs": [{"name": "text", "datatype": "BYTES",
                                   "shape": [n], "data": [n strings]}]}
                                  → {"model_name", "outputs": [{"name": "embedding",
                                   "datatype": "FP32", "shape": [n, 384], "data": [...]}]}
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import orjson

MODEL = "minilm"
READY_PATH = "/v2/health/ready"
METADATA_PATH = f"/v2/models/{MODEL}"
INFER_PATH = f"/v2/models/{MODEL}/infer"
INPUT = "text"
OUTPUT = "embedding"


class BadRequest(ValueError):
    """The request body is not an infer request for the text input (answered with 400)."""


def parser(description: str) -> argparse.ArgumentParser:
    """The options every peer takes; a peer adds its own batch settings."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--repository", type=Path, required=True, help="repository with a minilm plan")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--threads", type=int, default=1, help="runtime threads (default 1)")
    return p


def plan_folder(repository: Path) -> Path:
    """The latest minilm version folder of ``repository``."""
    from inferno.repository import version_path

    return version_path(repository, MODEL)


def load_runner(folder: Path, threads: int) -> Any:
    """The plan's runner, warmed up once so that the first request is not the slow one."""
    import inferno

    runner = inferno.load_plan(folder, threads=threads)
    runner.predict(["warm-up"])
    return runner


def metadata_body(folder: Path) -> bytes:
    """GET /v2/models/minilm, as ``inferno serve`` answers it."""
    return orjson.dumps(
        {
            "name": MODEL,
            "versions": [folder.name],
            "platform": "inferno-plan",
            "inputs": [{"name": INPUT, "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": OUTPUT, "datatype": "FP32", "shape": [-1, 384]}],
        }
    )


def texts_of(doc: Any) -> list[str]:
    """The strings of the ``text`` input of a parsed infer request.

    Raises:
        BadRequest: naming what was expected and what was found.
    """
    inputs = doc.get("inputs") if isinstance(doc, dict) else None
    if not isinstance(inputs, list):
        raise BadRequest("expected {'inputs': [...]}")
    for item in inputs:
        if isinstance(item, dict) and item.get("name") == INPUT:
            data = item.get("data")
            if item.get("datatype") != "BYTES" or not isinstance(data, list) or not data:
                raise BadRequest(
                    f"input {INPUT!r}: expected BYTES data [n strings], got {item!r:.80}"
                )
            return [str(x) for x in data]
    raise BadRequest(f"expected an input named {INPUT!r}")


def parse(body: bytes) -> list[str]:
    """The strings of a raw infer request body.

    Raises:
        BadRequest: the body is not JSON or not an infer request for ``text``.
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not JSON: {exc}") from exc
    return texts_of(doc)


def embed(runner: Any, texts: list[str]) -> np.ndarray:
    """One runtime call: embeddings of ``texts``, L2-normalized, float32 [n, 384]."""
    rows = np.asarray(runner.predict(texts), dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)


def response_body(rows: np.ndarray) -> bytes:
    """The infer response for ``rows`` (one request's embeddings)."""
    return orjson.dumps(
        {
            "model_name": MODEL,
            "outputs": [
                {
                    "name": OUTPUT,
                    "datatype": "FP32",
                    "shape": list(rows.shape),
                    "data": np.ascontiguousarray(rows).reshape(-1),
                }
            ],
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})
