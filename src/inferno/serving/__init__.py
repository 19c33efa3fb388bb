"""Serving: the Open Inference Protocol v2 over HTTP, with dynamic batching, caching and metrics.

Layout follows the request: ``app`` (routes, errors → HTTP) → ``protocol`` (bodies) →
``models`` (versions, hot swap) → ``pipelines`` (check, tokenize, shape) → ``batcher`` →
the runtime; ``cache`` and ``stats`` on the side, ``server`` runs it all on uvicorn.
"""

from __future__ import annotations

from inferno.serving.config import ModelServeConfig, ServeConfig
from inferno.serving.server import ServerThread, serve

__all__ = ["ModelServeConfig", "ServeConfig", "ServerThread", "serve"]
