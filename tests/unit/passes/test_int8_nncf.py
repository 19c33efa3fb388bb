"""``int8_nncf``: NNCF's post-training INT8 written as ONNX QDQ, its scheme chosen by structure,
accuracy control that only runs when the plain graph misses its target."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from inferno.errors import PassError
from inferno.passes import make_pass
from inferno.passes.base import NothingToDo, PassContext
from inferno.passes.int8_nncf import has_attention, worst_cosine

from .graphs import bert_feeds, conv_net, mlp, op_counts, random_feeds, save, tiny_bert
from .support import context, cosine, fake_hardware, run

pytest.importorskip("nncf")


MOVES = ("Transpose", "Reshape", "Squeeze", "Unsqueeze")
"""Data movement a quantizer may sit before (NNCF quantizes a key before its transpose)."""


def _dequantized_inputs(path: Path) -> dict[str, int]:
    """Per compute node, how many of its inputs come out of a DequantizeLinear (through data
    movement only)."""
    graph = onnx.load(str(path)).graph
    producers = {out: n for n in graph.node for out in n.output}

    def dequantized(name: str) -> bool:
        node = producers.get(name)
        while node is not None and node.op_type in MOVES:
            node = producers.get(node.input[0])
        return node is not None and node.op_type == "DequantizeLinear"

    return {
        n.name: sum(1 for i in n.input if dequantized(i))
        for n in graph.node
        if n.op_type in ("MatMul", "Conv", "Gemm")
    }


def _activation_matmuls(path: Path) -> list[str]:
    graph = onnx.load(str(path)).graph
    weights = {i.name for i in graph.initializer}
    weights |= {o for n in graph.node if n.op_type in ("Constant", "DequantizeLinear")
                and n.input[:1] and n.input[0] in weights for o in n.output}
    weights |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    return [
        n.name for n in graph.node
        if n.op_type == "MatMul" and not any(i in weights for i in n.input)
    ]


def test_attention_is_recognised_by_structure_not_by_name(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    bert = onnx.load(str(tiny_bert(tmp_path / "bert.onnx")))
    assert has_attention(bert)
    assert not has_attention(conv_net())
    assert not has_attention(mlp())  # MatMuls by weights only, no Softmax


def test_conv_net_is_quantized_and_stays_close(tmp_path: Path) -> None:
    model = conv_net()
    src, dst = save(model, tmp_path / "conv.onnx"), tmp_path / "q.onnx"
    make_pass("int8_nncf").run(src, dst, context(random_feeds(model, 8)))
    counts = op_counts(dst)
    assert counts["QuantizeLinear"] >= 2 and counts["DequantizeLinear"] >= 4
    assert counts["Conv"] == 2  # QDQ around them, the float ops themselves kept
    assert all(n >= 1 for n in _dequantized_inputs(dst).values())
    feeds = random_feeds(model, 2, seed=9)
    for ref, out in zip(run(src, feeds), run(dst, feeds), strict=True):
        assert cosine(out[0], ref[0]) > 0.99


def test_transformer_scheme_quantizes_the_attention_matmuls(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    src, dst = tiny_bert(tmp_path / "bert.onnx"), tmp_path / "q.onnx"
    make_pass("prepare").run(src, tmp_path / "p.onnx", context())
    make_pass("int8_nncf").run(tmp_path / "p.onnx", dst, context(bert_feeds(8)))
    dequantized = _dequantized_inputs(dst)
    attention = _activation_matmuls(tmp_path / "p.onnx")
    assert len(attention) == 4  # queries x keys and weights x values, in 2 layers
    # NNCF's transformer scheme quantizes both activations of queries x keys, in each layer
    assert sum(dequantized[name] == 2 for name in attention) == 2, dequantized
    feeds = bert_feeds(2, seed=5)
    for ref, out in zip(run(src, feeds), run(dst, feeds), strict=True):
        assert cosine(out[0], ref[0]) > 0.95


def test_samples_at_their_own_shapes_calibrate_in_place_of_batches(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    src, dst = tiny_bert(tmp_path / "bert.onnx"), tmp_path / "q.onnx"
    samples = [f for n in (5, 9, 13) for f in bert_feeds(2, batch=1, seq=n, seed=n)]
    broken = [{"input_ids": np.zeros((1, 4), np.int64)}]  # would fail: inputs missing
    ctx = PassContext(fake_hardware(), calibration=broken, samples=samples, threads=2)
    make_pass("int8_nncf").run(src, dst, ctx)
    assert op_counts(dst)["QuantizeLinear"] > 0


def test_accuracy_control_is_nothing_to_do_when_the_plain_graph_is_close(tmp_path: Path) -> None:
    model = conv_net()
    src = save(model, tmp_path / "conv.onnx")
    with pytest.raises(NothingToDo, match="accuracy control would revert nothing"):
        make_pass("int8_nncf", accuracy_control=True, max_cosine_drop=0.5).run(
            src, tmp_path / "q.onnx", context(random_feeds(model, 8))
        )
    assert not (tmp_path / "q.onnx").exists()


def test_accuracy_control_reverts_quantizers_to_meet_a_tight_target(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    src = tiny_bert(tmp_path / "bert.onnx")
    ctx = context(bert_feeds(6))
    plain, controlled = tmp_path / "plain.onnx", tmp_path / "ac.onnx"
    make_pass("int8_nncf").run(src, plain, ctx)
    make_pass("int8_nncf", accuracy_control=True, max_cosine_drop=1e-6, max_reverted=3).run(
        src, controlled, ctx
    )
    assert op_counts(controlled)["QuantizeLinear"] < op_counts(plain)["QuantizeLinear"]
    feeds = list(ctx.calibration)
    reference = run(src, feeds)

    def worst(path: Path) -> float:
        return min(worst_cosine(r, o) for r, o in zip(reference, run(path, feeds), strict=True))

    assert worst(controlled) >= worst(plain)


def test_without_calibration_it_does_not_apply_and_refuses_to_run(tmp_path: Path) -> None:
    model = conv_net()
    src = save(model, tmp_path / "conv.onnx")
    assert not make_pass("int8_nncf").applies_to(model, context())
    with pytest.raises(PassError, match="needs calibration"):
        make_pass("int8_nncf").run(src, tmp_path / "q.onnx", context())


def test_nothing_reaches_stdout(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    model = conv_net()
    src = save(model, tmp_path / "conv.onnx")
    make_pass("int8_nncf").run(src, tmp_path / "q.onnx", context(random_feeds(model, 4)))
    assert capfd.readouterr().out == ""


def test_worst_cosine_is_the_lowest_sample_over_float_outputs() -> None:
    ref = [np.array([[1.0, 0.0], [0.0, 1.0]], np.float32), np.array([3, 4], np.int64)]
    out = [np.array([[1.0, 0.0], [1.0, 1.0]], np.float32), np.array([0, 0], np.int64)]
    assert worst_cosine(ref, out) == pytest.approx(np.sqrt(0.5))


def test_a_cast_of_an_initializer_is_folded_so_nncf_can_read_the_graph(tmp_path: Path) -> None:
    from onnx import TensorProto, helper, numpy_helper

    from inferno.passes.int8_nncf import fold_initializer_casts

    weight = np.arange(12, dtype=np.float64).reshape(4, 3) / 10
    graph = helper.make_graph(
        [helper.make_node("Cast", ["w64"], ["w"], to=TensorProto.FLOAT),
         helper.make_node("MatMul", ["x", "w"], ["y"])],
        "cast_weight",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(weight, "w64")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    src, dst = save(model, tmp_path / "cast.onnx"), tmp_path / "q.onnx"
    feeds = random_feeds(model, 4)
    make_pass("int8_nncf").run(src, dst, context(feeds))  # NNCF alone: AttributeError: type
    assert "Cast" not in op_counts(dst)
    assert fold_initializer_casts(model) == 1 and not [n for n in model.graph.node if n.op_type == "Cast"]
    for ref, out in zip(run(src, feeds), run(dst, feeds), strict=True):
        assert cosine(out[0], ref[0]) > 0.99
