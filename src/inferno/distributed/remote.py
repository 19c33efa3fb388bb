"""The ingress's side of a model deployment: a ``Runtime`` whose ``run`` is a Ray call.

The ingress keeps everything of a version but its session: the pipeline (decode, merge,
tokenize, split), the batcher, cache, statistics and monitor are the ones of one machine.
Only ``runtime.run(feeds)`` crosses to a replica, once per batch, so the hop's cost is shared
by the batch's requests. A batch is a pure function of its inputs, so one that was on a
replica when it died is run again on another: Ray Serve does not retry it, we do.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np

from inferno.errors import DeadlineExceededError, ServiceUnavailableError
from inferno.runtimes.base import Artifact, Feeds, Runtime, RuntimeSettings

log = logging.getLogger(__name__)

ATTEMPTS = 4
"""Runs of one batch before it fails: a replica that dies takes a batch down with it, and the
router may pick another dying one before the controller has seen the death."""
BACKOFF_S = (0.05, 0.25, 1.0)


class Deployment:
    """One model version's Ray Serve application, shared by the ingress's runners of it."""

    def __init__(self, app: str, model: str, version: int, timeout_s: float) -> None:
        self.app = app
        self.model, self.version = model, str(version)
        self.label = f"model {model!r} version {version}"
        """How errors name it."""
        self.timeout_s = timeout_s
        self.handle: Any = None
        self.description: dict[str, Any] = {}
        self.retried = 0
        """Batches run again because their replica died."""
        self.replicas: dict[str, list[float]] = {}
        """Per replica that answered: [batches, compute seconds] (the ``/metrics`` series)."""
        self._users = 0
        self._lock = threading.Lock()
        self._on_last_release: Any = None

    def connect(self, handle: Any, on_last_release: Any) -> None:
        """The application is running: ask a replica what it loaded."""
        self.handle = handle
        self._on_last_release = on_last_release
        self.description = handle.describe.remote().result(timeout_s=self.timeout_s)

    def counts(self) -> list[tuple[str, int, float]]:
        """(replica, batches, compute seconds) for each replica that answered."""
        with self._lock:
            return [(replica, int(n), seconds) for replica, (n, seconds) in self.replicas.items()]

    def acquire(self) -> None:
        with self._lock:
            self._users += 1

    def release(self) -> None:
        """One runner let go; the last one deletes the application (its replicas stop)."""
        with self._lock:
            self._users -= 1
            last = self._users == 0
        if last and self._on_last_release is not None:
            self._on_last_release(self)

    def run(self, feeds: Feeds) -> list[np.ndarray]:
        from ray.exceptions import GetTimeoutError, RayActorError
        from ray.serve.exceptions import BackPressureError

        for attempt in range(ATTEMPTS):
            try:
                outputs, replica, seconds = self.handle.run.remote(feeds).result(timeout_s=self.timeout_s)
                with self._lock:
                    counts = self.replicas.setdefault(replica, [0, 0.0])
                    counts[0] += 1
                    counts[1] += seconds
                result: list[np.ndarray] = outputs
                return result
            except BackPressureError:
                raise ServiceUnavailableError(f"{self.label}: every replica's queue is full", 1.0) from None
            except (TimeoutError, GetTimeoutError):
                raise DeadlineExceededError(
                    f"{self.label}: no replica answered within {self.timeout_s:g} s (the model's timeout_s)"
                ) from None
            except RayActorError as exc:
                if attempt == ATTEMPTS - 1:
                    raise ServiceUnavailableError(
                        f"{self.label}: {ATTEMPTS} replicas died under the same batch "
                        f"({exc.__class__.__name__}); is the deployment crashing?", 1.0) from None
                log.warning("%s: a replica died under a batch (%s); running it again", self.label,
                            exc.__class__.__name__)
                self.retried += 1
                time.sleep(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
        raise AssertionError("unreachable")  # the loop returns or raises


class RemoteRuntime(Runtime):
    """A runtime whose model runs on the replicas of a :class:`Deployment`."""

    name = "ray"

    def __init__(self, deployment: Deployment) -> None:
        super().__init__(RuntimeSettings())
        self.deployment = deployment
        deployment.acquire()

    @classmethod
    def available(cls) -> bool:
        return True

    @classmethod
    def supports(cls, artifact: Artifact, provider: str | None = None) -> bool:
        return True

    def load(self, artifact: Artifact) -> None:
        """Nothing to load here: the replicas loaded the model."""

    def run(self, feeds: Feeds) -> list[np.ndarray]:
        return self.deployment.run(feeds)

    def close(self) -> None:
        self.deployment.release()

    @property
    def provider(self) -> str:
        return str(self.deployment.description.get("provider", "CPU"))

    @property
    def sequence_multiple(self) -> int:  # type: ignore[override]
        """The replicas' runtime's: the ingress pads sequences for it."""
        return int(self.deployment.description.get("sequence_multiple", 1))
