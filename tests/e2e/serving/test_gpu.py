"""Serving a GPU plan: accelerate --device cuda, serve, infer through tritonclient, GPU metrics.

Runs only on a machine with a CUDA GPU and a GPU runtime (``gpu`` marker); skipped elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import inferno

from .support import Server, digits_inputs, digits_pixels, running, text_inputs

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


@pytest.fixture(scope="module")
def gpu_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    repo = tmp_path_factory.mktemp("gpu") / "model_repository"
    inferno.accelerate("digits", repository=repo, device="cuda", repeats=5)
    inferno.accelerate("minilm", repository=repo, device="cuda", repeats=5, max_eval_samples=64)
    with running(repo) as server:
        yield server


def test_gpu_plans_serve_on_the_gpu_with_gpu_batches(gpu_server: Server) -> None:
    client = gpu_server.client()
    for name in ("digits", "minilm"):
        config = client.get_model_config(name)
        assert config["instance_group"][0]["kind"] == "KIND_GPU"
        assert config["max_batch_size"] == 256
        metadata = client.get_model_metadata(name)
        provider = metadata["parameters"]["provider"]
        assert "cpu" not in provider.lower(), provider
    pixels = digits_pixels(200)
    result = client.infer("digits", digits_inputs(pixels, binary=True))
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (200, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-2)
    embeddings = client.infer("minilm", text_inputs(["a GPU-served sentence", "another one"])).as_numpy("embedding")
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-3)


def test_metrics_report_gpu_utilization_memory_and_power(gpu_server: Server) -> None:
    samples = gpu_server.metrics()
    names = {key.split("{")[0] for key in samples}
    assert {"inferno_gpu_memory_total_bytes", "inferno_gpu_memory_used_bytes", "inferno_gpu_utilization"} <= names
    total = next(v for k, v in samples.items() if k.startswith("inferno_gpu_memory_total_bytes"))
    assert total > 1e9
    assert any(k.startswith("inferno_gpu_power_usage_watts") for k in samples) or any(
        k.startswith("inferno_gpu_energy_consumption_joules") for k in samples
    )


def test_restart_reuses_the_saved_plan(gpu_server: Server) -> None:
    # The TensorRT engine (when TensorRT was chosen) lives in the version folder: a second
    # server on the same repository must come up without rebuilding it.
    repo = Path(gpu_server.manager.config.repository)
    folder = repo / "minilm" / "1"
    caches = list((folder / "trt_cache").glob("*.engine")) if (folder / "trt_cache").exists() else []
    mtimes = {p: p.stat().st_mtime for p in caches}
    with running(repo, models=("minilm",)) as again:
        assert again.client().is_model_ready("minilm")
    assert {p: p.stat().st_mtime for p in caches} == mtimes
