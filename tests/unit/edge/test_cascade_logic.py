"""The cascade's logic: routing by threshold and margin, the sweep's arithmetic, the operating
point, cross-validation and softmax detection. The edge is a real ONNX Runtime session on a
tiny graph built here; the cloud is a stand-in object (pure logic only: the real cloud is in
tests/e2e/test_cascade.py)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from inferno.edge.cascade import Cascade, load_edge, sweep
from inferno.edge.cloud import CloudClient, decode_output, encode_request
from inferno.edge.sweep import (
    as_probabilities,
    check_threshold,
    confidence,
    evaluate,
    operating_point,
    plot_sweep,
)
from inferno.errors import CloudError, ConfigError, DataMismatchError
from inferno.serving.protocol import OutputTensor, encode_infer_response, parse_infer_request

CLASSES = 4


def tiny_graph(path: Path, *, op: str = "Softmax", classes: int = CLASSES, out_shape: list[object] | None = None) -> Path:
    """x float [batch, classes] → ``op`` (Softmax: probabilities; Identity: logits) → y."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", classes])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape or ["batch", classes])
    node = helper.make_node(op, ["x"], ["y"], **({"axis": 1} if op == "Softmax" else {}))
    if op == "ReduceMax":
        node = helper.make_node(op, ["x"], ["y"], axes=[1], keepdims=0)
    model = helper.make_model(helper.make_graph([node], "tiny", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.save(model, str(path))
    return path


class FakeCloud:
    """Answers one-hot on a fixed class and records every call."""

    def __init__(self, answer: int = 3) -> None:
        self.answer = answer
        self.calls: list[dict[str, np.ndarray]] = []

    def infer(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        self.calls.append(inputs)
        out = np.zeros((len(inputs["x"]), CLASSES), dtype=np.float32)
        out[:, self.answer] = 1.0
        return out


def logits_for(conf_rows: list[list[float]]) -> np.ndarray:
    """Inputs whose softmax is the given probability rows (log of them)."""
    return np.log(np.asarray(conf_rows, dtype=np.float32))


@pytest.fixture
def softmax_edge(tmp_path: Path):  # type: ignore[no-untyped-def]
    return load_edge(tiny_graph(tmp_path / "edge.onnx"))


# -- probabilities and confidence -------------------------------------------------------------------


def test_probabilities_pass_through_and_logits_get_a_softmax() -> None:
    probs = np.array([[0.7, 0.2, 0.1, 0.0], [0.25, 0.25, 0.25, 0.25]], dtype=np.float32)
    assert as_probabilities(probs) is probs
    logits = np.array([[2.0, 1.0, 0.0, -1.0], [0.0, 0.0, 0.0, 5.0]], dtype=np.float32)
    out = as_probabilities(logits)
    assert out.dtype == np.float32 and np.allclose(out.sum(axis=1), 1.0, atol=1e-6)
    assert (out.argmax(axis=1) == logits.argmax(axis=1)).all()
    expected = np.exp(logits[0]) / np.exp(logits[0]).sum()
    assert np.allclose(out[0], expected, atol=1e-6)
    # non-negative rows that do not sum to 1 are not probabilities either
    assert np.allclose(as_probabilities(np.array([[2.0, 2.0]], dtype=np.float32)), [[0.5, 0.5]])
    with pytest.raises(DataMismatchError, match=r"\[rows, classes\]"):
        as_probabilities(np.zeros(3, dtype=np.float32))


def test_confidence_top_and_margin() -> None:
    probs = np.array([[0.6, 0.3, 0.1], [0.4, 0.35, 0.25]])
    assert np.allclose(confidence(probs, "top"), [0.6, 0.4])
    assert np.allclose(confidence(probs, "margin"), [0.3, 0.05])
    with pytest.raises(ConfigError, match="--rule 'entropy'"):
        confidence(probs, "entropy")


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), True])
def test_threshold_outside_0_1_is_refused(bad: float) -> None:
    with pytest.raises(ConfigError, match="--threshold"):
        check_threshold(bad)


# -- routing ----------------------------------------------------------------------------------------


def test_confident_rows_stay_on_the_edge_the_rest_go_to_the_cloud_in_one_request(softmax_edge) -> None:  # type: ignore[no-untyped-def]
    rows = [[0.97, 0.01, 0.01, 0.01], [0.5, 0.3, 0.1, 0.1], [0.1, 0.91, 0.0, -0.0], [0.4, 0.4, 0.1, 0.1]]
    x = logits_for([[max(v, 1e-6) for v in r] for r in rows])
    cloud = FakeCloud(answer=3)
    result = Cascade(softmax_edge, cloud, threshold=0.9).predict({"x": x})
    assert result.on_edge.tolist() == [True, False, True, False]
    assert len(cloud.calls) == 1 and np.array_equal(cloud.calls[0]["x"], x[[1, 3]])
    assert result.probabilities.argmax(axis=1).tolist() == [0, 3, 1, 3]
    assert (result.edge_rows, result.cloud_rows) == (2, 2) and result.cloud_s > 0


def test_margin_rule_routes_by_best_minus_second(softmax_edge) -> None:  # type: ignore[no-untyped-def]
    x = logits_for([[0.6, 0.35, 0.03, 0.02], [0.5, 0.1, 0.2, 0.2]])  # top 0.6 / 0.5; margin 0.25 / 0.3
    cloud = FakeCloud()
    result = Cascade(softmax_edge, cloud, threshold=0.28, rule="margin").predict({"x": x})
    assert result.on_edge.tolist() == [False, True]
    assert np.allclose(result.confidence, [0.25, 0.3], atol=1e-5)


def test_nothing_forwarded_means_no_cloud_call(softmax_edge) -> None:  # type: ignore[no-untyped-def]
    cloud = FakeCloud()
    result = Cascade(softmax_edge, cloud, threshold=0.0).predict({"x": logits_for([[0.4, 0.3, 0.2, 0.1]])})
    assert result.on_edge.all() and cloud.calls == [] and result.cloud_s == 0.0


def test_a_cloud_answer_of_the_wrong_shape_is_a_cloud_error(softmax_edge) -> None:  # type: ignore[no-untyped-def]
    class Short(FakeCloud):
        def infer(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
            return super().infer(inputs)[:1]

    with pytest.raises(CloudError, match="expected \\[2, 4\\]"):
        Cascade(softmax_edge, Short(), threshold=1.0).predict({"x": logits_for([[0.4, 0.3, 0.2, 0.1]] * 2)})


def test_a_batch_that_does_not_fit_names_the_input(softmax_edge) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DataMismatchError, match="input 'x'"):
        Cascade(softmax_edge, FakeCloud(), 0.5).predict({"x": np.zeros((2, 5), dtype=np.float32)})


def test_bad_rule_and_threshold_are_config_errors(softmax_edge) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="--threshold 2"):
        Cascade(softmax_edge, FakeCloud(), 2)
    with pytest.raises(ConfigError, match="--rule 'best'"):
        Cascade(softmax_edge, FakeCloud(), 0.5, rule="best")  # type: ignore[arg-type]


# -- edge models ------------------------------------------------------------------------------------


def test_logits_edge_answers_probabilities(tmp_path: Path) -> None:
    edge = load_edge(tiny_graph(tmp_path / "logits.onnx", op="Identity"))
    out = edge.run({"x": np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)})
    assert np.allclose(out.sum(axis=1), 1.0) and out.argmax() == 3


def test_an_edge_without_a_class_output_is_refused_naming_it(tmp_path: Path) -> None:
    path = tiny_graph(tmp_path / "scalar.onnx", op="ReduceMax", out_shape=["batch"])
    with pytest.raises(ConfigError, match=r"expected a classifier .* found 'y' float32 \[batch\]"):
        load_edge(path)


def _bundle(folder: Path, graph: Path, kind: str = "tensor", source: str = "nowhere", teacher: str | None = "big") -> Path:
    folder.mkdir()
    (folder / "model.onnx").write_bytes(graph.read_bytes())
    spec = {"dtype": "float32", "shape": ["batch", CLASSES]}
    (folder / "manifest.json").write_text(json.dumps({
        "format": "inferno-edge-bundle", "version": 1, "name": "tiny", "source": source, "teacher": teacher,
        "model": "model.onnx", "inputs": [{"name": "x", **spec}], "outputs": [{"name": "y", **spec}],
        "task": "classification", "preprocessor": {"kind": kind}, "threads": 2, "files": {}}))
    return folder


def test_edge_bundle_folder(tmp_path: Path) -> None:
    edge = load_edge(_bundle(tmp_path / "bundle", tiny_graph(tmp_path / "g.onnx")))
    assert (edge.name, edge.output, edge.classes, edge.threads, edge.cloud_model) == ("tiny", "y", CLASSES, 2, "big")
    assert np.allclose(edge.run({"x": np.zeros((3, CLASSES), dtype=np.float32)}), 0.25)


def test_a_bundle_of_a_bundled_model_names_it_for_the_cloud(tmp_path: Path) -> None:
    edge = load_edge(_bundle(tmp_path / "bundle", tiny_graph(tmp_path / "g.onnx"), source="bundled:digits",
                             teacher=None))
    assert (edge.source, edge.cloud_model) == ("digits", "digits")


def test_text_bundle_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected a tensor model"):
        load_edge(_bundle(tmp_path / "bundle", tiny_graph(tmp_path / "g.onnx"), kind="text"))


def test_onnx_edge_without_data_has_no_labels(tmp_path: Path) -> None:
    edge = load_edge(tiny_graph(tmp_path / "g.onnx"))
    with pytest.raises(Exception, match="labelled samples"):
        edge.eval_data()
    npz = tmp_path / "data.npz"
    np.savez(npz, x=np.zeros((5, CLASSES), dtype=np.float32), labels=np.arange(5) % CLASSES)
    data = edge.eval_data(npz)
    assert len(data) == 5 and data.labels is not None


# -- sweep arithmetic -------------------------------------------------------------------------------


def _arrays() -> tuple[np.ndarray, ...]:
    """Six rows: edge confidences 0.95, 0.9, 0.8, 0.7, 0.6, 0.5; the edge is wrong on rows 2 and 4,
    the cloud on row 5."""
    conf = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.5])
    labels = np.zeros(6, dtype=np.int64)
    edge = np.stack([conf, 1 - conf], axis=1)
    edge[[2, 4]] = edge[[2, 4]][:, ::-1]
    cloud = np.tile([0.9, 0.1], (6, 1))
    cloud[5] = [0.2, 0.8]
    return edge, cloud, labels, np.full(6, 1.0), np.full(6, 10.0)


def test_sweep_arithmetic_per_threshold() -> None:
    edge, cloud, labels, edge_ms, cloud_ms = _arrays()
    result = evaluate(edge, cloud, labels, edge_ms, cloud_ms, [0.85, 0.0, 0.75], rtt_ms=50, tolerance=0.0)
    assert [p.threshold for p in result] == [0.0, 0.75, 0.85]  # sorted
    low, mid, high = result
    # T=0: all on the edge: 4/6 right; latency = edge only
    assert (low.edge_share, low.accuracy, low.edge_accuracy, low.cloud_accuracy) == (1.0, 4 / 6, 4 / 6, None)
    assert low.mean_latency_ms == pytest.approx(1.0)
    # T=0.75: rows 0-2 on the edge (row 2 wrong), rows 3-5 to the cloud (row 5 wrong)
    assert (mid.edge_rows, mid.accuracy, mid.edge_accuracy, mid.cloud_accuracy) == (3, 4 / 6, 2 / 3, 2 / 3)
    assert mid.mean_latency_ms == pytest.approx(1.0 + 0.5 * (10 + 50))
    # T=0.85: rows 0-1 on the edge, both right; the cloud gets 4, misses row 5
    assert (high.edge_rows, high.accuracy) == (2, 5 / 6)
    assert result.cloud_accuracy == pytest.approx(5 / 6) and result.edge_accuracy == pytest.approx(4 / 6)
    assert result.cloud_latency_ms == pytest.approx(60.0) and result.edge_latency_ms == pytest.approx(1.0)
    assert [p.within_tolerance for p in result] == [False, False, True]
    assert result.operating == high
    assert json.loads(json.dumps(result.to_dict()))["operating"]["threshold"] == 0.85


def test_operating_point_is_the_highest_share_within_tolerance() -> None:
    edge, cloud, labels, edge_ms, cloud_ms = _arrays()
    loose = evaluate(edge, cloud, labels, edge_ms, cloud_ms, [0.0, 0.75, 0.85], tolerance=0.17)
    assert loose.operating is not None and loose.operating.threshold == 0.0  # 4/6 ≥ 5/6 − 0.17
    strict = evaluate(edge, cloud, labels, edge_ms, cloud_ms, [0.0, 0.75], tolerance=0.0)
    assert strict.operating is None
    assert operating_point([]) is None


def test_cross_validation_chooses_on_one_half_and_scores_on_the_other() -> None:
    rng = np.random.default_rng(1)
    n = 200
    conf = rng.uniform(0.5, 1.0, n)
    labels = np.zeros(n, dtype=np.int64)
    edge = np.stack([conf, 1 - conf], axis=1)
    wrong = rng.uniform(size=n) > conf  # less confident rows are wrong more often
    edge[wrong] = edge[wrong][:, ::-1]
    cloud = np.tile([0.9, 0.1], (n, 1))
    grid = [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0]
    result = evaluate(edge, cloud, labels, np.ones(n), np.ones(n), grid, tolerance=0.01, seed=3)
    cv = result.cross_validated
    assert cv is not None
    order = np.random.default_rng(3).permutation(n)
    halves = (order[: n // 2], order[n // 2:])
    on = np.zeros(n, dtype=bool)
    for k, (fit, score) in enumerate((halves, halves[::-1])):
        part = evaluate(edge[fit], cloud[fit], labels[fit], np.ones(len(fit)), np.ones(len(fit)), grid, tolerance=0.01)
        assert part.operating is not None and cv.thresholds[k] == part.operating.threshold
        on[score] = conf[score] >= part.operating.threshold
    correct = np.where(on, edge.argmax(1) == 0, True)
    assert cv.edge_share == pytest.approx(on.mean()) and cv.accuracy == pytest.approx(correct.mean())
    assert cv.within_tolerance == (cv.accuracy >= 1.0 - 0.01)


def test_sweep_rejects_mismatched_rows_and_bad_settings() -> None:
    edge, cloud, labels, edge_ms, cloud_ms = _arrays()
    with pytest.raises(DataMismatchError, match="same rows"):
        evaluate(edge, cloud[:5], labels, edge_ms, cloud_ms, [0.5])
    with pytest.raises(ConfigError, match="--rtt-ms"):
        evaluate(edge, cloud, labels, edge_ms, cloud_ms, [0.5], rtt_ms=-1)
    with pytest.raises(ConfigError, match="--thresholds"):
        evaluate(edge, cloud, labels, edge_ms, cloud_ms, [0.5, 1.2])


def test_sweep_runs_each_side_once_per_batch_and_plots(softmax_edge, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, CLASSES)).astype(np.float32) * 3
    labels = x.argmax(axis=1)
    cloud = FakeCloud(answer=0)
    result = sweep(softmax_edge, cloud, {"x": x}, labels, [0.0, 0.5, 0.9], rtt_ms=20, batch_size=4)
    assert [len(c["x"]) for c in cloud.calls] == [4, 4, 2]
    assert result[0].accuracy == 1.0 and result.cloud_accuracy == pytest.approx((labels == 0).mean())
    assert all(p.mean_latency_ms >= 20 * (1 - p.edge_share) for p in result)
    plot_sweep(result, tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"


# -- the cloud client's codec and failures ----------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False])
def test_request_encoding_is_what_the_server_parses(binary: bool) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    body, headers = encode_request({"x": x}, "y", binary)
    request = parse_infer_request(body, headers.get("Inference-Header-Content-Length"))
    assert np.array_equal(request.inputs["x"].data, x) and request.inputs["x"].datatype == "FP32"
    assert request.outputs is not None and request.outputs[0].name == "y" and request.outputs[0].binary == binary


@pytest.mark.parametrize("binary", [True, False])
def test_response_decoding_reads_what_the_server_encodes(binary: bool) -> None:
    probs = np.array([[0.1, 0.9], [0.8, 0.2]], dtype=np.float32)
    other = np.array([7, 8], dtype=np.int64)
    body, headers = encode_infer_response("m", "1", [OutputTensor("label", other, binary),
                                                     OutputTensor("probabilities", probs, binary)])
    got = decode_output(body, headers.get("inference-header-content-length"), "probabilities")
    assert np.array_equal(got, probs)
    assert np.array_equal(decode_output(body, headers.get("inference-header-content-length"), ""), probs)


def test_an_unreachable_cloud_is_a_cloud_error_naming_the_url() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = CloudClient(f"http://127.0.0.1:{port}", "digits", timeout_s=2)
    with pytest.raises(CloudError, match=f"cannot reach the cloud at http://127.0.0.1:{port}: connection refused"):
        client.infer({"x": np.zeros((1, 4), dtype=np.float32)})


def test_a_bad_cloud_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="CLOUD_URL"):
        CloudClient("ftp://example", "digits")
