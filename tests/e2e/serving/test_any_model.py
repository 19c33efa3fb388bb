"""Models from the wild through the real tritonclient: a detector that needs sizes divisible by
32 (warmed up at the plan's shapes), a plan that fails its warm-up beside a healthy one, and a
stateful model (state in, state out, a batch on axis 1, a scalar sample rate).

Tiny graphs of those kinds (``tests.unit.serving.plans``) in plan folders written by hand.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.unit.serving import plans

from .support import Server, running

STATE_SHAPES = {"input": [1, plans.SEQUENCE], "state": [2, 1, plans.STATE], "sr": []}


def tensors(feeds: dict[str, np.ndarray], binary: bool) -> list[httpclient.InferInput]:
    inputs = []
    for name, array in feeds.items():
        tensor = httpclient.InferInput(name, list(array.shape), "FP32" if array.dtype == np.float32 else "INT64")
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    return inputs


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """det: the detector with shapes recorded; det-old: the same plan made before shapes were
    recorded; vad: the stateful model with shapes and a reference profile."""
    path = tmp_path_factory.mktemp("any_model")
    plans.write_plan(path, "det", plans.pad32(), {"x": [1, 3, 64, 64]})
    plans.write_plan(path, "det-old", plans.pad32())
    plans.write_plan(path, "vad", plans.stateful(), STATE_SHAPES, profile=plans.stateful_samples(32))
    return path


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[Server]:
    with running(repo) as s:  # entering waits for /v2/health/ready: 200
        yield s


# -- sizes divisible by 32 -----------------------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("size", [64, 96])
def test_the_detector_warms_up_at_its_shapes_and_answers_like_onnxruntime(server: Server, binary: bool,
                                                                           size: int) -> None:
    x = np.random.default_rng(size).standard_normal((2, 3, size, size)).astype(np.float32)
    result = server.client().infer("det", tensors({"x": x}, binary))
    np.testing.assert_allclose(result.as_numpy("y"), plans.reference(plans.pad32(), {"x": x})["y"], rtol=1e-6)


def test_a_plan_that_fails_its_warm_up_is_unavailable_with_the_reason_and_the_server_is_ready(server: Server) -> None:
    client = server.client()
    assert client.is_server_ready()
    assert client.is_model_ready("det") and not client.is_model_ready("det-old")
    index = {r["name"]: r for r in client.get_model_repository_index()}
    assert index["det"]["state"] == "READY" and index["vad"]["state"] == "READY"
    failed = index["det-old"]
    assert failed["state"] == "UNAVAILABLE"
    reason = failed["reason"]
    assert "warm-up failed at input shapes {'x': [1, 3, 8, 8]}" in reason, reason
    assert "ONNXRuntimeError" in reason and "--shape" in reason, reason

    x = np.zeros((1, 3, 64, 64), np.float32)
    with pytest.raises(InferenceServerException) as info:
        client.infer("det-old", tensors({"x": x}, True))
    assert str(info.value.status()) == "500"
    assert "UNAVAILABLE" in info.value.message() and reason in info.value.message()
    response = server.request("GET", "/v2/models/det-old")
    # failed for good: a retry of the same files fails the same way, so no Retry-After
    assert response.status == 500 and reason in response.error()
    assert "retry-after" not in {k.lower() for k in response.headers}, response.headers


# -- state in, state out -------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_state_goes_in_and_comes_out_like_onnxruntime(server: Server, binary: bool) -> None:
    feeds = plans.stateful_feeds(3, seed=7)
    result = server.client().infer("vad", tensors(feeds, binary))
    expected = plans.reference(plans.stateful(), feeds)
    assert result.as_numpy("stateN").shape == (2, 3, plans.STATE)
    np.testing.assert_allclose(result.as_numpy("output"), expected["output"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.as_numpy("stateN"), expected["stateN"], rtol=1e-5, atol=1e-6)


def test_a_stream_carries_its_state_from_call_to_call(server: Server) -> None:
    client = server.client()
    model = plans.stateful()
    state = np.zeros((2, 1, plans.STATE), np.float32)
    expected_state = state
    for step in range(4):
        feeds = {**plans.stateful_feeds(1, seed=step), "state": state}
        state = client.infer("vad", tensors(feeds, True)).as_numpy("stateN")
        expected_state = plans.reference(model, {**feeds, "state": expected_state})["stateN"]
        np.testing.assert_allclose(state, expected_state, rtol=1e-5, atol=1e-6)


def test_concurrent_streams_keep_their_own_state(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    model = plans.stateful()
    errors: list[BaseException] = []
    results: dict[int, list[np.ndarray]] = {}
    start = threading.Barrier(8)

    def stream(i: int) -> None:
        try:
            client = server.client()  # a tritonclient client is not shared across threads
            feeds = plans.stateful_feeds(1 + i % 2, seed=100 + i)
            start.wait(timeout=30)
            out = client.infer("vad", tensors(feeds, True))
            results[i] = [feeds, out.as_numpy("output"), out.as_numpy("stateN")]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    for feeds, output, state in results.values():
        expected = plans.reference(model, feeds)
        np.testing.assert_allclose(output, expected["output"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state, expected["stateN"], rtol=1e-5, atol=1e-6)
    monitor = server.manager.get("vad").monitor
    assert monitor is not None and monitor.flush(), "the version watches its traffic (it has a profile)"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "the monitor took graph-layout batches"


def test_stateful_metadata_and_config_show_the_batch_where_it_is(server: Server) -> None:
    client = server.client()
    meta = client.get_model_metadata("vad")
    assert {t["name"]: t["shape"] for t in meta["inputs"]} == {"input": [-1, -1], "state": [2, -1, 4], "sr": []}
    assert {t["name"]: t["shape"] for t in meta["outputs"]} == {"output": [-1, 1], "stateN": [2, -1, 4]}
    config = client.get_model_config("vad")
    assert config["max_batch_size"] == 0, "batch on axis 1: no Triton batching, full dims"
    assert {t["name"]: t["dims"] for t in config["input"]} == {"input": [-1, -1], "state": [2, -1, 4], "sr": []}
    det = client.get_model_config("det")
    assert det["max_batch_size"] > 0 and det["input"][0]["dims"] == [3, -1, -1]


def test_a_state_with_the_wrong_batch_is_refused_naming_the_axis(server: Server) -> None:
    feeds = plans.stateful_feeds(2)
    feeds["state"] = feeds["state"][:, :1]
    with pytest.raises(InferenceServerException) as info:
        server.client().infer("vad", tensors(feeds, True))
    assert str(info.value.status()) == "400"
    assert "input 'state': expected batch 2 on axis 1" in info.value.message()
