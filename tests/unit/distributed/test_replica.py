"""A replica runs one batch at a time, whatever Serve's thread pool hands it at once."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import numpy as np

from inferno.distributed.replica import ModelReplica


class _Runtime:
    """Records how many ``run`` calls overlap (the real one would share the reserved CPUs)."""

    def __init__(self) -> None:
        self.inside = 0
        self.most = 0
        self._lock = threading.Lock()

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with self._lock:
            self.inside += 1
            self.most = max(self.most, self.inside)
        time.sleep(0.02)  # long enough for the other threads to arrive while this one runs
        with self._lock:
            self.inside -= 1
        return [feeds["x"] * 2]


def _replica(runtime: Any) -> ModelReplica:
    replica = ModelReplica.__new__(ModelReplica)  # no Ray: the constructor asks Ray who it is
    replica.runner = SimpleNamespace(runtime=runtime)  # type: ignore[assignment]
    replica.replica = "r1"
    replica._one_at_a_time = threading.Lock()
    return replica


def test_batches_handed_in_at_once_run_one_after_another() -> None:
    runtime = _Runtime()
    replica = _replica(runtime)
    answers: list[Any] = []
    threads = [threading.Thread(target=lambda i=i: answers.append(replica.run({"x": np.full(2, i)})))
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert runtime.most == 1
    assert sorted(int(out[0][0]) for out, _, _ in answers) == [0, 2, 4, 6]
    assert all(who == "r1" and seconds > 0 for _, who, seconds in answers)
