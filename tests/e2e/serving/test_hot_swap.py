"""A new version published and loaded while clients keep sending: nothing fails, the old one goes."""

from __future__ import annotations

import json
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from inferno import repository

from .support import digits_inputs, digits_pixels, parse_metrics, running

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Answer:
    sent: float
    received: float
    version: str


def test_hot_swap_under_load_fails_no_request(digits_only_copy: Path) -> None:
    repo = digits_only_copy
    with running(repo, models=("digits",)) as server:
        old = server.manager.get("digits")
        stop = threading.Event()
        answers: list[Answer] = []
        failures: list[BaseException] = []

        def send(worker: int) -> None:
            client = server.client()
            pixels = digits_pixels(2, seed=worker)
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    result = client.infer("digits", digits_inputs(pixels, binary=worker % 2 == 0))
                    probabilities = result.as_numpy("probabilities")
                    assert probabilities.shape == (2, 10)
                    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-4)
                except BaseException as exc:
                    failures.append(exc)
                    return
                answers.append(Answer(sent, time.monotonic(), result.get_response()["model_version"]))
            client.close()

        def wait_for_answers(n: int, after: float) -> None:
            deadline = time.monotonic() + 30
            while sum(a.sent > after for a in answers) < n and not failures and time.monotonic() < deadline:
                time.sleep(0.01)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        try:
            wait_for_answers(20, after=0)
            published = repository.write_version(
                repo, "digits", lambda staging, final: shutil.copytree(repo / "digits" / "1", staging, dirs_exist_ok=True)
            )
            assert published == repo / "digits" / "2"
            control = server.client()
            swap_started = time.monotonic()
            control.load_model("digits")
            swap_done = time.monotonic()
            wait_for_answers(20, after=swap_done)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)
        assert not failures, failures[:3]

        before = [a for a in answers if a.received < swap_started]
        after = [a for a in answers if a.sent > swap_done]
        during = [a for a in answers if swap_started < a.sent < swap_done]
        assert len(before) >= 20 and len(after) >= 20 and during, (len(before), len(during), len(after))
        assert {a.version for a in before} == {"1"}
        assert {a.version for a in after} == {"2"}
        # the old version is gone: retired, drained, no longer listed
        assert not old.ready and old.batcher.in_flight == 0
        assert server.manager.loaded() == {"digits": ["2"]}
        assert not control.is_model_ready("digits", "1")
        assert control.is_model_ready("digits", "2")
        assert control.get_model_metadata("digits")["versions"] == ["2"]
        index = {r["version"]: r["state"] for r in control.get_model_repository_index()}
        assert index == {"1": "UNAVAILABLE", "2": "READY"}
        stats = control.get_inference_statistics("digits")["model_stats"]
        assert [(s["version"], s["inference_stats"]["fail"]["count"]) for s in stats] == [("2", 0)]
        assert stats[0]["inference_stats"]["success"]["count"] >= len(after)
        metrics = parse_metrics(server.request("GET", "/metrics").text)
        assert 'inferno_queue_depth{model="digits",version="2"}' in metrics
        assert 'inferno_queue_depth{model="digits",version="1"}' not in metrics
        failed = [k for k, v in metrics.items() if k.startswith("inferno_request_failure_total") and v]
        assert not failed, failed


def test_reload_with_new_settings_rebuilds_the_version_and_keeps_its_metrics(digits_only_copy: Path) -> None:
    repo = digits_only_copy
    with running(repo, models=("digits",)) as server:
        client = server.client()
        old = server.manager.get("digits")
        client.infer("digits", digits_inputs(digits_pixels(2)))
        (repo / "digits" / "serve.json").write_text(json.dumps({"max_batch_size": 4, "cache_bytes": 65536}))
        client.load_model("digits")
        assert server.manager.get("digits") is not old and not old.ready
        config = client.get_model_config("digits")
        assert config["max_batch_size"] == 4 and config["response_cache"] == {"enable": True}
        with pytest.raises(InferenceServerException) as info:
            client.infer("digits", digits_inputs(digits_pixels(5)))
        assert "at most 4 rows" in info.value.message()
        client.infer("digits", digits_inputs(digits_pixels(4)))
        metrics = parse_metrics(server.request("GET", "/metrics").text)
        labels = '{model="digits",version="1"}'
        assert f"inferno_queue_depth{labels}" in metrics
        assert any(k.startswith("inferno_model_info{") and 'version="1"' in k for k in metrics), metrics.keys()
        over_http = '{model="digits",protocol="http",version="1"}'
        assert metrics[f"inferno_request_success_total{over_http}"] == 2  # counters carry over the reload


def test_a_broken_new_version_fails_to_load_and_the_old_one_keeps_serving(digits_only_copy: Path) -> None:
    repo = digits_only_copy

    def broken(staging: Path, final: Path) -> None:
        shutil.copytree(repo / "digits" / "1", staging, dirs_exist_ok=True)
        (staging / "model.onnx").write_bytes(b"not an onnx model")

    with running(repo, models=("digits",)) as server:
        client = server.client()
        repository.write_version(repo, "digits", broken)
        with pytest.raises(InferenceServerException) as info:
            client.load_model("digits")
        assert str(info.value.status()) == "400", info.value  # failed for good: no 503 inviting retries
        assert "digits" in info.value.message()
        assert server.manager.loaded() == {"digits": ["1"]}
        result = client.infer("digits", digits_inputs(digits_pixels(1)))
        assert result.get_response()["model_version"] == "1"
        index = {r["version"]: r for r in client.get_model_repository_index()}
        assert index["1"]["state"] == "READY"
        assert index["2"]["state"] == "UNAVAILABLE" and index["2"]["reason"]
