"""``inferno serve --ray`` on a real local Ray instance: the same protocol through the cluster,
a replica killed under load, autoscaling 1 → 2 → 1, and a hot swap under load.

One Ray instance serves the whole module (starting one costs seconds); each test deploys its
own applications and the server deletes them when it stops. Waits on the cluster are polls
with a deadline, never assertions on durations.
"""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from inferno import repository
from inferno.distributed import RayOptions
from inferno.repository.plan import PlanRunner
from inferno.serving.pipelines import WARMUP_RUNS

from .support import SENTENCES, Server, digits_inputs, digits_pixels, running, text_inputs

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")
from inferno.distributed.cluster import RayCluster  # noqa: E402  (needs ray)
from inferno.distributed.remote import Deployment, RemoteRuntime  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SMALL = 0.25
"""Ray CPUs per replica: two models of two replicas and a hot swap's spare fit on 2 CPUs."""


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    made = RayCluster(RayOptions(replicas=2, replica_cpus=SMALL, num_cpus=2))
    try:
        yield made
    finally:
        made.close()


def deployment_of(server: Server, model: str) -> Deployment:
    runtime = server.manager.get(model).pipelines[0].runner.runtime  # type: ignore[attr-defined]
    assert isinstance(runtime, RemoteRuntime)
    return runtime.deployment


def replica_states(app: str) -> dict[str, int]:
    status = serve.status().applications.get(app)
    if status is None:
        return {}
    (deployment,) = status.deployments.values()
    return dict(deployment.replica_states)


def wait_until(what: str, check: Callable[[], bool], seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {seconds:.0f} s")
        time.sleep(0.2)


class Load:
    """Closed-loop clients on digits until stopped (or ``limit`` requests each), counting."""

    def __init__(self, server: Server, workers: int = 4, limit: int = 20_000) -> None:
        self.server, self.limit = server, limit
        self.stop = threading.Event()
        self.answers: list[tuple[float, str]] = []  # (sent, version)
        self.failures: list[BaseException] = []
        self.threads = [threading.Thread(target=self._send, args=(i,)) for i in range(workers)]

    def _send(self, worker: int) -> None:
        client = self.server.client()
        pixels = digits_pixels(2, seed=worker)
        for _ in range(self.limit):
            if self.stop.is_set():
                break
            sent = time.monotonic()
            try:
                result = client.infer("digits", digits_inputs(pixels, binary=True))
                np.testing.assert_allclose(result.as_numpy("probabilities").sum(1), 1.0, atol=1e-4)
            except BaseException as exc:
                self.failures.append(exc)
                continue
            self.answers.append((sent, result.get_response()["model_version"]))
        client.close()

    def wait_for(self, n: int, after: float = 0.0) -> None:
        wait_until(f"{n} answers", lambda: sum(t > after for t, _ in self.answers) >= n or len(self.failures) > 50)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)


def test_the_protocol_through_the_cluster(cluster: RayCluster, model_repository: Path) -> None:
    with running(model_repository, runners=cluster.runners, server={"grpc_port": 0}) as server, \
            running(model_repository) as local:
        for model in ("digits", "minilm"):
            assert replica_states(deployment_of(server, model).app) == {"RUNNING": 2}
        client, plain = server.client(), local.client()
        # metadata and config: what one machine says, the provider the replicas loaded
        assert client.get_model_metadata("digits") == plain.get_model_metadata("digits")
        assert client.get_model_config("minilm") == plain.get_model_config("minilm")
        # outputs: those of the same plan run here
        pixels = digits_pixels(5, seed=3)
        expected = PlanRunner(model_repository / "digits" / "1").predict(pixels)
        got = client.infer("digits", digits_inputs(pixels, binary=True)).as_numpy("probabilities")
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        embedded = client.infer("minilm", text_inputs(SENTENCES)).as_numpy("embedding")
        reference = plain.infer("minilm", text_inputs(SENTENCES)).as_numpy("embedding")
        np.testing.assert_allclose(embedded, reference, rtol=1e-4, atol=1e-5)
        # gRPC goes through the same ingress
        rpc = grpcclient.InferenceServerClient(f"127.0.0.1:{server.thread.app.grpc_port}")
        inp = grpcclient.InferInput("pixels", list(pixels.shape), "FP32")
        inp.set_data_from_numpy(pixels)
        np.testing.assert_allclose(rpc.infer("digits", [inp]).as_numpy("probabilities"), expected, rtol=1e-5, atol=1e-6)
        # bad input: a 400 naming it, and the cluster keeps serving
        with pytest.raises(InferenceServerException) as bad:
            client.infer("digits", digits_inputs(np.zeros((2, 3, 8, 8), np.float32)))
        assert bad.value.status() == "400" and "'pixels'" in str(bad.value) and "[2, 3, 8, 8]" in str(bad.value)
        assert client.infer("digits", digits_inputs(pixels)).as_numpy("probabilities").shape == (5, 10)
        stats = client.get_inference_statistics("digits")["model_stats"][0]
        assert stats["inference_stats"]["success"]["count"] == 3  # the HTTP twice, gRPC once
        assert stats["inference_stats"]["fail"]["count"] == 1
        # per-replica series on the ingress: every batch it sent (its warm-up's too), by replica
        cluster.export_metrics(server.thread.app.metrics.registry)
        samples = server.metrics()
        ran = {k: v for k, v in samples.items()
               if k.startswith('inferno_replica_batches_total{model="digits",replica=')}
        warm_ups = WARMUP_RUNS * len(server.manager.get("digits").pipelines)  # type: ignore[attr-defined]
        assert sum(ran.values()) == stats["execution_count"] + warm_ups and 1 <= len(ran) <= 2, ran
        assert all(samples[k.replace("batches", "compute_seconds")] > 0 for k in ran)
        apps = {deployment_of(server, m).app for m in ("digits", "minilm")}
    wait_until("the server's deployments deleted", lambda: not apps & set(serve.status().applications))


def test_a_replica_killed_under_load(cluster: RayCluster, model_repository: Path) -> None:
    with running(model_repository, models=("digits",), runners=cluster.runners) as server:
        deployment = deployment_of(server, "digits")
        with Load(server) as load:
            load.wait_for(50)
            described = deployment.handle.describe.remote().result()
            victim = described["replica"]
            ray.kill(ray.get_actor(described["actor"], namespace="serve"), no_restart=True)
            killed = time.monotonic()
            load.wait_for(200, after=killed)
            wait_until("two replicas again", lambda: replica_states(deployment.app) == {"RUNNING": 2})
            load.wait_for(50, after=time.monotonic())
        # a batch on the dying replica is run again on the other: no request fails at all
        assert not load.failures, load.failures[:3]
        # the replacement answers beside the survivor (four calls at a time spread over both)
        seen: set[str] = set()

        def both_answer() -> bool:
            calls = [deployment.handle.describe.remote() for _ in range(4)]
            seen.update(c.result()["replica"] for c in calls)
            return len(seen) == 2

        wait_until("the replacement answering", both_answer, seconds=30)
        assert victim not in seen


def test_autoscaling_up_under_load_and_down_after(cluster: RayCluster, model_repository: Path) -> None:
    cluster.options = dataclasses.replace(cluster.options, autoscale=(1, 2), upscale_delay_s=1.0,
                                          downscale_delay_s=2.0)
    try:
        with running(model_repository, models=("digits",), runners=cluster.runners) as server:
            app = deployment_of(server, "digits").app
            assert replica_states(app) == {"RUNNING": 1}
            with Load(server, workers=6) as load:
                wait_until("scaled up to 2", lambda: replica_states(app) == {"RUNNING": 2})
            assert not load.failures, load.failures[:3]
            wait_until("scaled down to 1", lambda: replica_states(app) == {"RUNNING": 1})
    finally:
        cluster.options = dataclasses.replace(cluster.options, autoscale=None)


def test_a_new_version_rolled_out_under_load(cluster: RayCluster, digits_only_copy: Path) -> None:
    repo = digits_only_copy
    with running(repo, models=("digits",), runners=cluster.runners) as server:
        old = deployment_of(server, "digits").app
        with Load(server) as load:
            load.wait_for(50)
            repository.write_version(
                repo, "digits", lambda staging, final: shutil.copytree(repo / "digits" / "1", staging, dirs_exist_ok=True))
            server.client().load_model("digits")
            swapped = time.monotonic()
            load.wait_for(100, after=swapped)
        assert not load.failures, load.failures[:3]
        assert {v for t, v in load.answers if t > swapped} == {"2"}  # sent after the swap: the new version
        new = deployment_of(server, "digits").app
        assert new != old and replica_states(new) == {"RUNNING": 2}
        wait_until("the old version's deployment deleted", lambda: old not in serve.status().applications)
