"""The body of a model version's Ray Serve deployment: what runs on each replica.

A replica loads the version's plan with its own runtime (the same ``PlanRunner`` as one
machine), warms it with the pipeline's sample, and runs the batches the ingress sends. It
holds no queue, cache or monitor: those stay in the ingress, which sees every request.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from inferno.repository.plan import PlanRunner
from inferno.serving.pipelines import build_pipeline, warm_up


class ModelReplica:
    """One replica of one model version (Ray pickles the class by reference: workers import it)."""

    def __init__(self, folder: str, threads: int | None, trust: bool, group_by_length: bool) -> None:
        import ray

        self.runner = PlanRunner(Path(folder), threads, trust=trust)
        warm_up(build_pipeline(self.runner, group_by_length))
        context = ray.get_runtime_context()
        self.actor = context.get_actor_name() or ""
        """Ray's name of the replica's actor (``SERVE_REPLICA::<app>#<deployment>#<id>``)."""
        self.replica = self.actor.rsplit("#", 1)[-1] or context.get_actor_id() or f"pid {os.getpid()}"
        """Its short id, as Serve's logs and ``/metrics`` name it."""
        self._one_at_a_time = threading.Lock()
        """Serve runs sync methods in a thread pool (RAY_SERVE_RUN_SYNC_IN_THREADPOOL, on by
        default), so the two batches ``max_ongoing_requests`` lets in would run at once on
        the CPUs reserved for one: one runs, the next one's transfer overlaps it."""

    def run(self, feeds: dict[str, np.ndarray]) -> tuple[list[np.ndarray], str, float]:
        """One runtime call: the outputs in signature order, who ran them and in how many seconds."""
        with self._one_at_a_time:
            started = time.perf_counter()
            outputs = self.runner.runtime.run(feeds)
            return outputs, self.replica, time.perf_counter() - started

    def describe(self) -> dict[str, Any]:
        """What the ingress needs of the loaded runtime, and who answered."""
        runtime = self.runner.runtime
        return {"provider": runtime.provider, "sequence_multiple": runtime.sequence_multiple,
                "replica": self.replica, "actor": self.actor, "pid": os.getpid()}
