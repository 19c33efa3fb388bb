"""The body of a model version's Ray Serve deployment: what runs on each replica.

A replica loads the version's plan with its own runtime (the same ``PlanRunner`` as one
machine), warms it with the pipeline's sample, and runs the batches the ingress sends. It
holds no queue, cache or monitor: those stay in the ingress, which sees every request.
"""

from __future__ import annotations

import os
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
        self.replica = context.get_actor_name() or context.get_actor_id() or f"pid {os.getpid()}"

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One runtime call: the outputs in signature order."""
        return self.runner.runtime.run(feeds)

    def describe(self) -> dict[str, Any]:
        """What the ingress needs of the loaded runtime, and who answered."""
        runtime = self.runner.runtime
        return {"provider": runtime.provider, "sequence_multiple": runtime.sequence_multiple,
                "replica": self.replica, "pid": os.getpid()}
