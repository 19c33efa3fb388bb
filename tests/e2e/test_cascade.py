"""``inferno cascade`` end to end: a real ``inferno serve`` digits server on 127.0.0.1 as the
cloud, a real edge bundle (digits' graph with its softmax swapped for a halving of the
logits: the same classes, less sure of them), the Python API, the CLI, and the cascade
server with the real ``tritonclient`` as its client."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import tritonclient.http as httpclient
from onnx import TensorProto, helper, numpy_helper
from tritonclient.utils import InferenceServerException

import inferno
from inferno.cli import main
from inferno.edge.cascade import Cascade, CloudClient, EdgeModel, load_edge, sweep
from inferno.models.loaders import load_model
from inferno.serving.cascade import cascade_app, cascade_config
from inferno.serving.server import ServerThread
from tests.e2e.serving.support import Server, digits_inputs, parse_metrics, raw_request, running

THRESHOLD = 0.9
DIGITS = '{model="digits",version="1"}'


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """digits FP32 on ONNX Runtime, served by inferno on a free port."""
    repo = tmp_path_factory.mktemp("cascade") / "model_repository"
    inferno.accelerate("digits", repository=repo, variants=("fp32",), runtimes=("onnxruntime",),
                       repeats=3, device="cpu")
    with running(repo) as server:
        yield server


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An edge bundle by hand: digits' graph answering logits / 2 instead of probabilities."""
    graph = onnx.load(str(load_model("digits").onnx_path))
    softmax = next(n for n in graph.graph.node if n.op_type == "Softmax")
    graph.graph.initializer.append(numpy_helper.from_array(np.array(0.5, dtype=np.float32), "half"))
    graph.graph.node.remove(softmax)
    graph.graph.node.append(helper.make_node("Mul", [softmax.input[0], "half"], list(softmax.output)))
    folder = tmp_path_factory.mktemp("bundle") / "digits-edge"
    folder.mkdir()
    onnx.save(graph, str(folder / "model.onnx"))
    tensors = {"inputs": [{"name": "pixels", "dtype": "float32", "shape": ["batch", 1, 8, 8]}],
               "outputs": [{"name": "probabilities", "dtype": "float32", "shape": ["batch", 10]}]}
    (folder / "manifest.json").write_text(json.dumps({
        "format": "inferno-edge-bundle", "version": 1, "name": "digits-edge", "source": "bundled:digits",
        "model": "model.onnx", **tensors, "task": "classification", "preprocessor": {"kind": "tensor"},
        "threads": 1, "files": {}}))
    return folder


@pytest.fixture(scope="module")
def edge(bundle: Path) -> EdgeModel:
    return load_edge(bundle)


@pytest.fixture(scope="module")
def data(edge: EdgeModel) -> tuple[np.ndarray, np.ndarray]:
    found = edge.eval_data()
    assert isinstance(found.samples, dict) and found.labels is not None
    return found.samples["pixels"], found.labels


def cloud_probabilities(server: Server, pixels: np.ndarray) -> np.ndarray:
    """The cloud's answer, asked with the real tritonclient (64 rows a request: its batch limit)."""
    client = server.client()
    parts = [client.infer("digits", digits_inputs(pixels[i:i + 64], binary=True)).as_numpy("probabilities")
             for i in range(0, len(pixels), 64)]
    return np.concatenate(parts)


def edge_expected(cloud_probs: np.ndarray) -> np.ndarray:
    """softmax(logits / 2) = sqrt(p) / Σ sqrt(p), from the cloud's probabilities p."""
    root = np.sqrt(cloud_probs.astype(np.float64))
    return root / root.sum(axis=1, keepdims=True)


def cascade_server(cascade: Cascade, name: str) -> ServerThread:
    """``inferno cascade --serve``'s server on a free port: ``inferno serve``'s app with the cascade attached."""
    config = cascade_config("127.0.0.1", 0)
    return ServerThread(config, app=cascade_app(cascade, name, config))


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


# -- the Python API -----------------------------------------------------------------------------------


def test_predict_keeps_confident_rows_and_forwards_the_rest_in_one_request(
        cloud: Server, edge: EdgeModel, data: tuple[np.ndarray, np.ndarray]) -> None:
    pixels = data[0][:64]
    reference = cloud_probabilities(cloud, pixels)
    expected_edge = edge_expected(reference)
    cascade = Cascade(edge, CloudClient(cloud.url, "digits"), THRESHOLD)
    cascade.check_cloud()
    before = cloud.metrics()
    result = cascade.predict({"pixels": pixels})
    after = cloud.metrics()
    on = expected_edge.max(axis=1) >= THRESHOLD
    assert 0 < on.sum() < len(on), "the test needs both confident and unsure rows"
    assert np.array_equal(result.on_edge, on)
    assert np.allclose(result.probabilities[on], expected_edge[on], atol=1e-4)
    assert np.allclose(result.probabilities[~on], reference[~on], atol=1e-6)
    over_http = '{model="digits",protocol="http",version="1"}'
    delta = {k: after[k + labels] - before.get(k + labels, 0.0)
             for k, labels in (("inferno_request_success_total", over_http), ("inferno_inference_count_total", DIGITS))}
    assert delta == {"inferno_request_success_total": 1, "inferno_inference_count_total": (~on).sum()}


def test_sweep_against_the_real_cloud(cloud: Server, edge: EdgeModel, data: tuple[np.ndarray, np.ndarray]) -> None:
    pixels, labels = data
    reference = cloud_probabilities(cloud, pixels)
    result = sweep(edge, CloudClient(cloud.url, "digits"), {"pixels": pixels}, labels, [0.0, 0.9, 0.99, 0.999],
                   rtt_ms=50, batch_size=8)
    assert result.rows == len(labels) == 360
    assert result.cloud_accuracy == pytest.approx((reference.argmax(1) == labels).mean())
    assert result.cloud_accuracy > 0.97
    share = [p.edge_share for p in result]
    assert share[0] == 1.0 and share == sorted(share, reverse=True) and share[-1] < 0.9
    for p in result:
        on = edge_expected(reference).max(axis=1) >= p.threshold
        assert abs(p.edge_rows - int(on.sum())) <= 1  # float32 vs float64 at the threshold
        assert p.mean_latency_ms >= 50 * (1 - p.edge_share)
    assert result.operating is not None and result.operating.within_tolerance
    assert result.cross_validated is not None and len(result.cross_validated.thresholds) == 2


# -- the CLI ------------------------------------------------------------------------------------------


def test_cli_sweep_prints_json_and_plots(cloud: Server, bundle: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "sweep.png"
    main(["cascade", str(bundle), cloud.url, "--sweep", "--thresholds", "0.5,0.9,0.99", "--rtt-ms", "50",
          "--batch-size", "16", "--json", "--plot", str(png)])
    report = json.loads(capsys.readouterr().out)
    assert [p["threshold"] for p in report["points"]] == [0.5, 0.9, 0.99]
    assert report["rtt_ms"] == 50 and report["rows"] == 360 and report["operating"] is not None
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_cli_evaluates_one_threshold(cloud: Server, bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["cascade", str(bundle), cloud.url, "--threshold", "0.99", "--batch-size", "32"])
    line = capsys.readouterr().out
    assert "cascade at T=0.99 (top) on 360 rows" in line and "answered on the edge" in line


def _not_a_classifier(tmp_path: Path) -> str:
    x = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 1, 8, 8])
    y = helper.make_tensor_value_info("brightness", TensorProto.FLOAT, ["batch"])
    node = helper.make_node("ReduceMean", ["pixels"], ["brightness"], axes=[1, 2, 3], keepdims=0)
    path = tmp_path / "brightness.onnx"
    onnx.save(helper.make_model(helper.make_graph([node], "g", [x], [y]),
                                opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(path))
    return str(path)


CLI_ERRORS: dict[str, tuple[Any, str]] = {
    "unreachable cloud": (lambda b, url, tmp: [str(b), dead_url()], "cannot reach the cloud at http://127.0.0.1:"),
    "unknown model at the cloud": (lambda b, url, tmp: [str(b), url, "--model", "nope"],
                                   "model 'nope' is not served at"),
    "bad threshold": (lambda b, url, tmp: [str(b), url, "--threshold", "1.5"], "--threshold 1.5"),
    "not a classifier": (lambda b, url, tmp: [_not_a_classifier(tmp), url, "--model", "digits"],
                         "found 'brightness' float32 [batch]"),
}


@pytest.mark.parametrize("case", sorted(CLI_ERRORS))
def test_cli_errors_are_one_line_and_exit_2(case: str, cloud: Server, bundle: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    args, fragment = CLI_ERRORS[case]
    with pytest.raises(SystemExit) as exited:
        main(["cascade", *args(bundle, cloud.url, tmp_path)])
    assert exited.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], lines


# -- the cascade server, with tritonclient ------------------------------------------------------------


@pytest.fixture(scope="module")
def front(cloud: Server, edge: EdgeModel) -> Iterator[tuple[httpclient.InferenceServerClient, ServerThread, Cascade]]:
    cascade = Cascade(edge, CloudClient(cloud.url, "digits"), THRESHOLD)
    server = cascade_server(cascade, "digits")
    with server:
        yield httpclient.InferenceServerClient(f"127.0.0.1:{server.port}"), server, cascade


@pytest.mark.parametrize("binary", [True, False])
def test_server_answers_the_merged_probabilities(front: Any, cloud: Server, data: tuple[np.ndarray, np.ndarray],
                                                 binary: bool) -> None:
    client, _, cascade = front
    pixels = data[0][100:140]
    expected = cascade.predict({"pixels": pixels})
    outputs = [httpclient.InferRequestedOutput("probabilities", binary_data=binary)]
    result = client.infer("digits", digits_inputs(pixels, binary=binary), outputs=outputs)
    assert np.allclose(result.as_numpy("probabilities"), expected.probabilities, atol=1e-6)
    params = result.get_response()["parameters"]
    assert params == {"cascade_edge_rows": expected.edge_rows, "cascade_cloud_rows": expected.cloud_rows}
    assert 0 < expected.cloud_rows < len(pixels)


def test_server_takes_gzip_bodies_like_inferno_serve(front: Any, data: tuple[np.ndarray, np.ndarray]) -> None:
    client, _, _ = front
    pixels = data[0][:8]
    plain = client.infer("digits", digits_inputs(pixels)).as_numpy("probabilities")
    packed = client.infer("digits", digits_inputs(pixels), request_compression_algorithm="gzip")
    assert np.allclose(packed.as_numpy("probabilities"), plain, atol=1e-6)


def test_server_metadata_classification_and_metrics(front: Any, data: tuple[np.ndarray, np.ndarray]) -> None:
    client, server, _ = front
    meta = client.get_model_metadata("digits")
    assert meta["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]
    assert client.is_server_ready() and client.is_model_ready("digits")
    before = parse_metrics(raw_request("127.0.0.1", server.port, "GET", "/metrics").text)
    top = client.infer("digits", digits_inputs(data[0][:3]),
                       outputs=[httpclient.InferRequestedOutput("probabilities", class_count=2)])
    labels = [[s.decode().split(":")[1] for s in row] for row in top.as_numpy("probabilities")]
    assert [row[0] for row in labels] == [str(v) for v in data[1][:3]]
    after = parse_metrics(raw_request("127.0.0.1", server.port, "GET", "/metrics").text)
    label = '{model="digits"}'
    assert after["inferno_cascade_requests_total" + label] - before["inferno_cascade_requests_total" + label] == 1
    rows = [after[f'inferno_cascade_rows_total{{answered_by="{w}",model="digits"}}']
            - before[f'inferno_cascade_rows_total{{answered_by="{w}",model="digits"}}'] for w in ("edge", "cloud")]
    assert sum(rows) == 3


def test_server_refuses_bad_input_with_400_naming_it(front: Any) -> None:
    client, _, _ = front
    tensor = httpclient.InferInput("pixels", [2, 64], "FP32")
    tensor.set_data_from_numpy(np.zeros((2, 64), dtype=np.float32))
    with pytest.raises(InferenceServerException) as refused:
        client.infer("digits", [tensor])
    assert refused.value.status() == "400"
    assert "input 'pixels': expected FP32 [-1, 1, 8, 8], got FP32 [2, 64]" in refused.value.message()
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("mnist", digits_inputs(np.zeros((1, 1, 8, 8), dtype=np.float32)))
    assert unknown.value.status() == "404"


def test_server_is_inferno_serves_app_with_the_cascade_attached(front: Any,
                                                                  data: tuple[np.ndarray, np.ndarray]) -> None:
    client, server, _ = front

    def ask(method: str, path: str, body: str | None = None) -> Any:
        return raw_request("127.0.0.1", server.port, method, path, body)

    meta = ask("GET", "/v2/models/digits").json()
    assert meta["platform"] == "inferno_cascade" and meta["versions"] == ["1"]
    assert meta["parameters"] == {"threshold": THRESHOLD, "rule": "top", "edge": "digits-edge",
                                  "cloud": server.app.manager.get("digits").router.describe()["cloud"],
                                  "task": "classification"}
    assert ask("GET", "/v2/models/digits/versions/1/ready").status == 200
    assert ask("GET", "/v2/models/digits/versions/2").status == 404
    assert ask("POST", "/v2/repository/index", "{}").json() == [
        {"name": "digits", "version": "1", "state": "READY", "reason": ""}]
    refused = ask("POST", "/v2/repository/models/digits/unload", "{}")
    assert refused.status == 400 and "attached" in refused.error()
    assert ask("GET", "/v2/models/digits").status == 200  # still served
    wrong = ask("POST", "/metrics")
    assert wrong.status == 405 and wrong.headers["allow"] == "GET"
    before = ask("GET", "/v2/models/digits/stats").json()["model_stats"]
    assert [(s["name"], s["version"]) for s in before] == [("digits", "1")]
    client.infer("digits", digits_inputs(data[0][:5]))
    after = ask("GET", "/v2/models/digits/stats").json()["model_stats"][0]
    assert after["inference_stats"]["success"]["count"] == before[0]["inference_stats"]["success"]["count"] + 1
    assert after["inference_count"] == before[0]["inference_count"] + 5


def test_cloud_down_is_502_and_the_server_keeps_serving(edge: EdgeModel, cloud: Server,
                                                        data: tuple[np.ndarray, np.ndarray]) -> None:
    pixels = data[0][:64]
    conf = edge_expected(cloud_probabilities(cloud, pixels)).max(axis=1)
    sure, unsure = pixels[conf >= THRESHOLD + 0.01], pixels[conf < THRESHOLD - 0.01]
    server = cascade_server(Cascade(edge, CloudClient(dead_url(), "digits", timeout_s=2), THRESHOLD), "digits")
    with server:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
        with pytest.raises(InferenceServerException) as failed:
            client.infer("digits", digits_inputs(np.concatenate([sure[:2], unsure[:2]])))
        assert failed.value.status() == "502"
        assert "cannot reach the cloud at http://127.0.0.1:" in failed.value.message()
        answer = client.infer("digits", digits_inputs(sure[:4], binary=True))
        assert answer.get_response()["parameters"] == {"cascade_edge_rows": 4, "cascade_cloud_rows": 0}
        assert client.is_server_ready()
        metrics = parse_metrics(raw_request("127.0.0.1", server.port, "GET", "/metrics").text)
        assert metrics['inferno_cascade_failures_total{model="digits",reason="cloud"}'] == 1


def test_cli_serve_runs_inferno_serves_app_and_stops_cleanly_on_sigterm(cloud: Server, bundle: Path,
                                                                        data: tuple[np.ndarray, np.ndarray]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "inferno", "cascade", str(bundle), cloud.url, "--serve",
                             "--port", str(port), "--threshold", str(THRESHOLD)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while raw_status(port, "/v2/health/ready") != 200:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        answer = client.infer("digits", digits_inputs(data[0][:16], binary=True))
        params = answer.get_response()["parameters"]
        assert params["cascade_edge_rows"] + params["cascade_cloud_rows"] == 16
        assert answer.as_numpy("probabilities").shape == (16, 10)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    said = " ".join(err.split())  # the console wraps long lines
    assert f"cascade digits: edge digits-edge (T={THRESHOLD:g}, top) in front of {cloud.url}, serving on " \
           f"http://127.0.0.1:{port}" in said


def raw_status(port: int, path: str) -> int | None:
    try:
        return raw_request("127.0.0.1", port, "GET", path, timeout=2).status
    except OSError:
        return None
