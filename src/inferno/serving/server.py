"""Running the app on uvicorn: ``serve`` in the foreground, ``ServerThread`` for tests and benchmarks.

On SIGTERM or SIGINT uvicorn stops accepting connections and lets in-flight requests
finish (up to ``graceful_timeout_s``); the app's shutdown then drains every batcher, and
the process exits 0.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import logging
import resource
import signal
import socket
import threading
import time
from types import TracebackType

import uvicorn

from inferno.errors import ConfigError, ServiceUnavailableError
from inferno.serving.app import InfernoApp
from inferno.serving.config import ServeConfig
from inferno.serving.transport import ConnectionLimits, guarded_protocol

log = logging.getLogger(__name__)


def _uvicorn_config(app: InfernoApp, config: ServeConfig) -> uvicorn.Config:
    limits = ConnectionLimits(config.max_connections, config.keep_alive_timeout_s,
                              config.header_timeout_s, config.body_timeout_s)
    return uvicorn.Config(
        app, host=config.host, port=config.port, lifespan="on",
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http=guarded_protocol(limits, app.early_answer), timeout_keep_alive=round(config.keep_alive_timeout_s) or 1,
        access_log=False, log_level="warning", backlog=4096,
        proxy_headers=False, server_header=False,  # nothing reads them; each costs every request
        timeout_graceful_shutdown=round(config.graceful_timeout_s),
    )


class _Server(uvicorn.Server):
    """uvicorn's server, telling the app when it stops accepting: gRPC then stops too, and both
    protocols drain together instead of gRPC taking new work while HTTP drains."""

    def __init__(self, config: uvicorn.Config, app: InfernoApp) -> None:
        super().__init__(config)
        self.app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.app.begin_shutdown()
        await super().shutdown(sockets)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket; a clear error when the address is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"--host/--port {host}:{port}: cannot listen there ({exc.strerror})") from None
    sock.listen(4096)
    sock.set_inheritable(True)
    return sock


def serve(config: ServeConfig, app: InfernoApp | None = None) -> None:
    """Serve until SIGTERM/SIGINT (blocking); ``app``: one built with models attached (the
    cascade), else ``InfernoApp(config)``."""
    raise_open_files_limit(config.max_connections)
    app = app or InfernoApp(config)
    sock = bind(config.host, config.port)
    server = _Server(_uvicorn_config(app, config), app)
    # uvicorn drains, then re-raises the signal against the handlers it found: make those a
    # clean exit, so a graceful stop ends with status 0 rather than "killed by SIGTERM".
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _exit_cleanly)
    server.run(sockets=[sock])
    if app.startup_error is not None:
        raise app.startup_error


def raise_open_files_limit(connections: int) -> None:
    """Lift the soft open-files limit to the hard one: each connection holds a descriptor, and
    at the usual soft limit (1,024) a flood of idle sockets would stop ``accept`` before the
    connection cap could close any. A warning when even the hard limit is below the cap."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    if soft != resource.RLIM_INFINITY and soft < connections + 64:
        log.warning("open files limit %d is below --max-connections %d (+64 for models and logs): "
                    "raise it (ulimit -n) or lower --max-connections", soft, connections)


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


class ServerThread:
    """A real server on 127.0.0.1 in a background thread; ``with ServerThread(config) as url:``.

    ``port=0`` picks a free port. Entering waits until ``/v2/health/ready`` answers 200.
    ``app``: one built with models attached (the cascade), else ``InfernoApp(config)``.
    """

    def __init__(self, config: ServeConfig, ready_timeout_s: float = 120.0, *, app: InfernoApp | None = None) -> None:
        self.config = config
        self.app = app or InfernoApp(config)
        self.ready_timeout_s = ready_timeout_s
        self._sock = bind(config.host, config.port)
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://{config.host}:{self.port}"
        self._server = _Server(_uvicorn_config(self.app, config), self.app)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name="inferno-server", daemon=True)

    def __enter__(self) -> str:
        self._thread.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self.url

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if not self._thread.is_alive():
                if self.app.startup_error is not None:
                    raise self.app.startup_error
                raise ServiceUnavailableError("the server thread stopped before it was ready")
            if _status(self.config.host, self.port, "/v2/health/ready") == 200:
                return
            time.sleep(0.05)
        raise ServiceUnavailableError(f"the server was not ready within {self.ready_timeout_s:.0f} s")

    def stop(self) -> None:
        """Graceful stop, as on SIGTERM: in-flight requests finish first."""
        self._server.should_exit = True
        self._thread.join(timeout=self.config.graceful_timeout_s + 30)
        with contextlib.suppress(OSError):
            self._sock.close()


def _status(host: str, port: int, path: str) -> int | None:
    conn = http.client.HTTPConnection(host, port, timeout=2)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()
