"""The Open Inference Protocol v2 through the real tritonclient, in JSON and in binary tensors."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

import inferno
from inferno.repository.plan import PlanRunner
from inferno.serving import ModelServeConfig

from .support import SENTENCES, Server, digits_inputs, digits_pixels, running, text_inputs

pytestmark = pytest.mark.slow

BINARY = pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
VERSION = pytest.mark.parametrize("version", ["", "1"], ids=["latest", "v1"])


@pytest.fixture(scope="module")
def server(model_repository: Path) -> Iterator[Server]:
    with running(model_repository) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: Server) -> httpclient.InferenceServerClient:
    return server.client()


@pytest.fixture(scope="module")
def minilm_plan(model_repository: Path) -> Iterator[PlanRunner]:
    runner = inferno.load_plan(model_repository / "minilm" / "1")
    yield runner
    runner.close()


@pytest.fixture(scope="module")
def digits_plan(model_repository: Path) -> Iterator[PlanRunner]:
    runner = inferno.load_plan(model_repository / "digits" / "1")
    yield runner
    runner.close()


def normalized(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def status_of(exc: InferenceServerException) -> str:
    return str(exc.status())


# -- server and model metadata -----------------------------------------------------------------


def test_server_live_ready_and_metadata(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "inferno" and meta["version"] == inferno.__version__
    assert {"binary_tensor_data", "classification", "model_repository", "model_configuration",
            "statistics"} <= set(meta["extensions"])


@VERSION
def test_model_metadata(client: httpclient.InferenceServerClient, version: str) -> None:
    digits = client.get_model_metadata("digits", version)
    assert digits["name"] == "digits" and digits["versions"] == ["1"]
    assert digits["platform"] == "onnxruntime_onnx"
    assert digits["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    assert digits["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]
    minilm = client.get_model_metadata("minilm", version)
    assert minilm["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert minilm["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}]
    assert minilm["parameters"]["task"] == "embedding"


def test_model_ready(client: httpclient.InferenceServerClient) -> None:
    assert client.is_model_ready("digits")
    assert client.is_model_ready("minilm", "1")
    assert not client.is_model_ready("digits", "2")
    assert not client.is_model_ready("no-such-model")


def test_model_config(client: httpclient.InferenceServerClient) -> None:
    config = client.get_model_config("digits")
    assert config["name"] == "digits" and config["max_batch_size"] == 64
    assert config["input"] == [{"name": "pixels", "data_type": "TYPE_FP32", "dims": [1, 8, 8]}]
    assert config["output"] == [{"name": "probabilities", "data_type": "TYPE_FP32", "dims": [10]}]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == ModelServeConfig().max_queue_delay_us
    text = client.get_model_config("minilm", "1")
    assert text["input"] == [{"name": "text", "data_type": "TYPE_STRING", "dims": []}]
    assert text["output"][0]["dims"] == [384]


# -- inference -----------------------------------------------------------------------------------


@BINARY
@VERSION
def test_minilm_embeddings_match_the_plan(client: httpclient.InferenceServerClient, minilm_plan: PlanRunner,
                                          binary: bool, version: str) -> None:
    result = client.infer("minilm", text_inputs(SENTENCES, binary), model_version=version,
                          outputs=[httpclient.InferRequestedOutput("embedding", binary_data=binary)])
    response = result.get_response()
    assert response["model_name"] == "minilm" and response["model_version"] == "1"
    out = response["outputs"][0]
    assert out["datatype"] == "FP32" and out["shape"] == [len(SENTENCES), 384]
    assert ("binary_data_size" in out.get("parameters", {})) == binary
    embeddings = result.as_numpy("embedding")
    assert embeddings.dtype == np.float32 and embeddings.shape == (len(SENTENCES), 384)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    expected = normalized(np.stack([minilm_plan.predict([s])[0] for s in SENTENCES]))
    np.testing.assert_allclose(embeddings, expected, atol=1e-4)


def test_minilm_default_outputs_and_request_id(client: httpclient.InferenceServerClient) -> None:
    result = client.infer("minilm", text_inputs(SENTENCES[:1]), request_id="req-7")
    assert result.get_response()["id"] == "req-7"
    assert result.as_numpy("embedding").shape == (1, 384)


def test_empty_outputs_list_returns_every_output(server: Server) -> None:
    # Triton and KServe: outputs not specified -> every output of the model
    body = json.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hi"]}],
                       "outputs": []}).encode()
    response = server.request("POST", "/v2/models/minilm/infer", body)
    assert response.status == 200, response.body
    assert [out["name"] for out in response.json()["outputs"]] == ["embedding"]


@pytest.mark.parametrize("group_by_length", [True, False], ids=["grouped", "one-call"])
def test_padding_in_a_batch_does_not_change_embeddings(model_repository: Path, group_by_length: bool) -> None:
    # one-call: every sentence padded to the longest of the request, in one runtime call
    with running(model_repository, models=("minilm",), group_by_length=group_by_length) as server:
        client = server.client()
        together = client.infer("minilm", text_inputs(SENTENCES, binary=True)).as_numpy("embedding")
        alone = np.concatenate([client.infer("minilm", text_inputs([s])).as_numpy("embedding") for s in SENTENCES])
    np.testing.assert_allclose(together, alone, atol=1e-4)
    assert not np.allclose(together[0], together[1], atol=1e-2)  # different sentences, different vectors


@BINARY
@VERSION
def test_digits_probabilities_match_the_plan(client: httpclient.InferenceServerClient, digits_plan: PlanRunner,
                                             binary: bool, version: str) -> None:
    pixels = digits_pixels(5, seed=1)
    result = client.infer("digits", digits_inputs(pixels, binary), model_version=version,
                          outputs=[httpclient.InferRequestedOutput("probabilities", binary_data=binary)])
    assert result.get_response()["model_version"] == "1"
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (5, 10)
    np.testing.assert_allclose(probabilities, digits_plan.predict(pixels), rtol=1e-5, atol=1e-6)


@BINARY
def test_digits_classification(client: httpclient.InferenceServerClient, digits_plan: PlanRunner,
                               binary: bool) -> None:
    pixels = digits_pixels(4, seed=2)
    result = client.infer("digits", digits_inputs(pixels, binary),
                          outputs=[httpclient.InferRequestedOutput("probabilities", binary_data=binary, class_count=3)])
    out = result.get_response()["outputs"][0]
    assert out["datatype"] == "BYTES" and out["shape"] == [4, 3]
    classes = result.as_numpy("probabilities")
    assert classes.shape == (4, 3)
    expected = digits_plan.predict(pixels)
    for row, probs in zip(classes, expected, strict=True):
        # tritonclient gives str for JSON BYTES, bytes for binary ones
        texts = [s.decode() if isinstance(s, bytes) else s for s in row]
        parsed = [(float(t.split(":")[0]), int(t.split(":")[1])) for t in texts]
        assert [index for _, index in parsed] == list(np.argsort(-probs, kind="stable")[:3])
        assert parsed[0][1] == int(np.argmax(probs))
        np.testing.assert_allclose([score for score, _ in parsed], np.sort(probs)[::-1][:3], atol=1e-5)


# -- statistics -----------------------------------------------------------------------------------


def _stats(client: httpclient.InferenceServerClient, model: str, version: str = "") -> dict:
    entries = client.get_inference_statistics(model, version)["model_stats"]
    assert len(entries) == 1
    return entries[0]


def test_statistics_shape_and_counts(client: httpclient.InferenceServerClient) -> None:
    before = _stats(client, "digits", "1")
    assert before["name"] == "digits" and before["version"] == "1"
    for key in ("last_inference", "inference_count", "execution_count", "inference_stats"):
        assert key in before
    for key in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output",
                "cache_hit", "cache_miss"):
        assert set(before["inference_stats"][key]) == {"count", "ns"}, key
    for seed in range(3):
        client.infer("digits", digits_inputs(digits_pixels(2, seed), binary=True))
    with pytest.raises(InferenceServerException):  # refused: a failure, never executed
        client.infer("digits", digits_inputs(digits_pixels(1).reshape(1, 64)))
    after = _stats(client, "digits")
    assert after["inference_count"] == before["inference_count"] + 6
    assert after["execution_count"] == before["execution_count"] + 3
    assert after["inference_stats"]["success"]["count"] == before["inference_stats"]["success"]["count"] + 3
    assert after["inference_stats"]["success"]["ns"] > before["inference_stats"]["success"]["ns"]
    assert after["inference_stats"]["compute_infer"]["ns"] > before["inference_stats"]["compute_infer"]["ns"]
    assert after["inference_stats"]["fail"]["count"] == before["inference_stats"]["fail"]["count"] + 1
    for stage in ("queue", "compute_input", "compute_infer", "compute_output"):
        executed = after["inference_stats"][stage]["count"] - before["inference_stats"][stage]["count"]
        assert executed == 3, (stage, after["inference_stats"])
    assert after["last_inference"] >= before["last_inference"] and after["last_inference"] > 0
    every = client.get_inference_statistics()["model_stats"]
    assert {(e["name"], e["version"]) for e in every} == {("digits", "1"), ("minilm", "1")}


def test_concurrent_requests_are_batched(model_repository: Path, digits_plan: PlanRunner) -> None:
    n = 12
    with running(model_repository, models=("digits",), max_queue_delay_us=300_000) as server:
        start = threading.Barrier(n)
        results: dict[int, np.ndarray] = {}
        errors: list[BaseException] = []

        def send(i: int) -> None:
            try:
                client = server.client()
                start.wait(timeout=30)
                results[i] = client.infer("digits", digits_inputs(digits_pixels(1, seed=i), binary=i % 2 == 0)
                                          ).as_numpy("probabilities")
                client.close()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors, errors
        stats = _stats(server.client(), "digits")
    for i in range(n):
        np.testing.assert_allclose(results[i], digits_plan.predict(digits_pixels(1, seed=i)), rtol=1e-5, atol=1e-6)
    assert stats["inference_count"] == n
    assert stats["inference_stats"]["success"]["count"] == n
    assert stats["execution_count"] < n, stats
    assert any(b["batch_size"] > 1 for b in stats["batch_stats"]), stats["batch_stats"]


# -- repository ---------------------------------------------------------------------------------


def test_repository_index_load_and_unload(model_repository: Path) -> None:
    with running(model_repository, models=("digits",)) as server:
        client = server.client()
        index = {(r["name"], r["version"]): r["state"] for r in client.get_model_repository_index()}
        assert index == {("digits", "1"): "READY", ("minilm", "1"): "UNAVAILABLE"}

        client.unload_model("digits")
        assert not client.is_model_ready("digits")
        assert client.get_model_repository_index()[0] == {
            "name": "digits", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"}
        with pytest.raises(InferenceServerException) as info:
            client.infer("digits", digits_inputs(digits_pixels(1)))
        assert status_of(info.value) == "404" and "digits" in info.value.message()

        client.load_model("digits")
        client.load_model("minilm")
        assert client.is_model_ready("digits") and client.is_model_ready("minilm")
        assert {r["state"] for r in client.get_model_repository_index()} == {"READY"}
        assert client.infer("digits", digits_inputs(digits_pixels(1))).as_numpy("probabilities").shape == (1, 10)
        assert client.infer("minilm", text_inputs(["loaded later"])).as_numpy("embedding").shape == (1, 384)

        with pytest.raises(InferenceServerException) as info:
            client.load_model("no-such-model")
        assert status_of(info.value) == "404" and "no-such-model" in info.value.message()
        with pytest.raises(InferenceServerException) as info:
            client.unload_model("no-such-model")
        assert status_of(info.value) == "404"
