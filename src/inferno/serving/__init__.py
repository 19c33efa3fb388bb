"""Serving: the Open Inference Protocol v2 over HTTP, with dynamic batching, caching and metrics.

Layout follows the request: ``app`` (routes, errors → HTTP) → ``protocol`` (bodies) →
``models`` (versions, hot swap) → ``pipelines`` (check, tokenize, shape) → ``batcher`` →
the runtime; ``cache`` and ``stats`` on the side, ``server`` runs it all on uvicorn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from inferno.serving.config import ModelServeConfig, ServeConfig

if TYPE_CHECKING:
    from inferno.serving.server import ServerThread, serve

__all__ = ["ModelServeConfig", "ServeConfig", "ServerThread", "serve"]


def __getattr__(name: str) -> Any:
    # The server (uvicorn, the app, the runtimes) loads when first used: the CLI reads the
    # config models for its options on every command without paying for it.
    if name in ("ServerThread", "serve"):
        from inferno.serving import server

        return getattr(server, name)
    raise AttributeError(f"module 'inferno.serving' has no attribute {name!r}")
