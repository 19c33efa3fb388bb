"""``prepare``: Constant-node weights become initializers, old opsets reach 13, outputs stay exact.

Third-party exporters (Paddle2ONNX for the PaddleOCR models, ...) keep weights in Constant
nodes and stop at opset 11; on such graphs ORT's quantizers quantized nothing (dynamic) or
wrote a graph ORT cannot load (static, per-channel ``axis`` before opset 13).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from inferno.errors import PassError
from inferno.passes import make_pass
from inferno.passes.prepare import Prepare

from .graphs import conv_net, if_net, mlp, op_counts, random_feeds, save, third_party
from .support import context, cosine, run


def _prepare(model: onnx.ModelProto, tmp_path: Path) -> tuple[Path, Path]:
    src, dst = save(model, tmp_path / "third_party.onnx"), tmp_path / "prepared.onnx"
    Prepare().run(src, dst, context())
    return src, dst


def _assert_exact(src: Path, dst: Path, feeds: list[dict[str, np.ndarray]]) -> None:
    for ref, out in zip(run(src, feeds), run(dst, feeds), strict=True):
        assert all(np.array_equal(r, o) for r, o in zip(ref, out, strict=True))


def _assert_int8_close(src: Path, dst: Path, feeds: list[dict[str, np.ndarray]]) -> None:
    """The INT8 budget of the other pass tests: 5% of the output range, cosine above 0.999."""
    for ref, out in zip(run(src, feeds), run(dst, feeds), strict=True):
        np.testing.assert_allclose(out[0], ref[0], rtol=0, atol=0.05 * float(np.abs(ref[0]).max()))
        assert cosine(out[0], ref[0]) > 0.999


def _opset(path: Path) -> int:
    return next(o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx"))


def test_constant_weights_become_initializers_of_the_same_name(tmp_path: Path) -> None:
    src, dst = _prepare(third_party(mlp()), tmp_path)
    prepared = onnx.load(str(dst))
    assert "Constant" not in op_counts(dst)
    assert {i.name for i in prepared.graph.initializer} == {i.name for i in mlp().graph.initializer}
    assert op_counts(dst) == op_counts(save(mlp(), tmp_path / "mlp.onnx"))
    _assert_exact(src, dst, random_feeds(mlp(), 3))


def test_dynamic_int8_quantizes_matmuls_whose_weights_were_constants(tmp_path: Path) -> None:
    src, prepared = _prepare(third_party(mlp()), tmp_path)
    dst = tmp_path / "int8.onnx"
    make_pass("int8_dynamic", per_channel=True).run(prepared, dst, context())
    counts = op_counts(dst)
    assert counts.get("MatMulInteger") == 4 and "MatMul" not in counts
    _assert_int8_close(src, dst, random_feeds(mlp(), 3, seed=7))


def test_dynamic_int8_quantizes_convs_whose_weights_were_constants(tmp_path: Path) -> None:
    model = third_party(conv_net())
    src, prepared = _prepare(model, tmp_path)
    dst = tmp_path / "int8.onnx"
    make_pass("int8_dynamic", op_types=("Conv",)).run(prepared, dst, context())
    assert op_counts(dst).get("ConvInteger") == 2
    _assert_int8_close(src, dst, random_feeds(conv_net(), 2, seed=7))


def test_an_opset_11_graph_is_upgraded_to_13_exactly_with_a_loadable_ir_version(
    tmp_path: Path,
) -> None:
    src, dst = _prepare(third_party(conv_net(), opset=11, ir_version=6), tmp_path)
    assert _opset(dst) == 13
    # Opset 13 came with IR 7: raised that far (the converter keeps 6), not to onnx's newest
    # IR, which an older onnxruntime refuses.
    assert onnx.load(str(dst)).ir_version == 7
    _assert_exact(src, dst, random_feeds(conv_net(), 3))


def test_static_int8_works_on_an_opset_11_graph_after_prepare(tmp_path: Path) -> None:
    model = third_party(conv_net(), opset=11)
    src, prepared = _prepare(model, tmp_path)
    dst = tmp_path / "int8.onnx"
    make_pass("int8_static").run(prepared, dst, context(random_feeds(conv_net(), 8)))
    counts = op_counts(dst)
    assert counts["QuantizeLinear"] >= 3 and counts["DequantizeLinear"] >= 6
    per_channel = [
        n
        for n in onnx.load(str(dst)).graph.node
        if n.op_type == "DequantizeLinear" and any(a.name == "axis" for a in n.attribute)
    ]
    assert per_channel  # the weights' per-channel scales, valid from opset 13
    _assert_int8_close(src, dst, random_feeds(conv_net(), 2, seed=9))


def test_static_int8_refuses_per_channel_on_opset_11_instead_of_writing_a_broken_graph(
    tmp_path: Path,
) -> None:
    src = save(third_party(conv_net(), opset=11), tmp_path / "old.onnx")
    with pytest.raises(PassError, match=r"opset >= 13.*opset 11.*prepare"):
        make_pass("int8_static").run(src, tmp_path / "q.onnx", context(random_feeds(conv_net(), 2)))


def test_static_mixed_precision_works_on_an_opset_11_graph_after_prepare(tmp_path: Path) -> None:
    _, prepared = _prepare(third_party(conv_net(), opset=11), tmp_path)
    dst = tmp_path / "mixed.onnx"
    feeds = random_feeds(conv_net(), 4)
    make_pass("mixed_precision", base="static").run(prepared, dst, context(feeds))
    assert op_counts(dst).get("QuantizeLinear", 0) >= 1
    run(dst, feeds[:1])  # loads and runs: no DequantizeLinear(axis) below opset 13


def test_if_subgraphs_keep_working_and_are_left_alone(tmp_path: Path) -> None:
    src, dst = _prepare(if_net(), tmp_path)
    prepared = onnx.load(str(dst))
    assert [n.op_type for n in prepared.graph.node] == ["If"]
    assert [i.name for i in prepared.graph.initializer] == ["W"]
    else_branch = next(a.g for a in prepared.graph.node[0].attribute if a.name == "else_branch")
    assert "Constant" in [n.op_type for n in else_branch.node]
    x = np.random.default_rng(3).normal(0, 1, (3, 8)).astype(np.float32)
    feeds = [{"x": x, "flag": np.array(flag)} for flag in (True, False)]
    _assert_exact(src, dst, feeds)


def test_value_ints_constants_and_graph_outputs(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Constant", [], ["shape"], value_ints=[-1, 2]),
        helper.make_node("Constant", [], ["c"], value_float=1.5),
        helper.make_node("Reshape", ["x", "shape"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2]),
            helper.make_tensor_value_info("c", TensorProto.FLOAT, []),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    src, dst = _prepare(model, tmp_path)
    prepared = onnx.load(str(dst))
    assert [n.op_type for n in prepared.graph.node] == ["Constant", "Reshape"]  # "c" is an output
    assert [i.name for i in prepared.graph.initializer] == ["shape"]
    _assert_exact(src, dst, [{"x": np.arange(4, dtype=np.float32).reshape(2, 2)}])


def test_applies_only_when_there_is_something_to_do() -> None:
    ctx = context()
    assert not Prepare().applies_to(mlp(), ctx)
    assert Prepare().applies_to(third_party(mlp()), ctx)
    old = third_party(mlp(), opset=11)
    del old.graph.node[: len(mlp().graph.initializer)]  # no Constants left: only the opset
    old.graph.initializer.extend(mlp().graph.initializer)
    assert Prepare().applies_to(old, ctx)


def test_int8_weight_only_sees_the_weights_after_prepare(tmp_path: Path) -> None:
    model = third_party(mlp(widths=(64, 128, 8)), opset=11)
    weight_only = make_pass("int8_weight_only")
    assert not weight_only.applies_to(model, context())
    _, dst = _prepare(model, tmp_path)
    assert weight_only.applies_to(onnx.load(str(dst)), context())


def test_a_failed_opset_upgrade_is_a_pass_error_naming_both_opsets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inferno.passes import prepare

    def refuse(model: onnx.ModelProto, version: int) -> onnx.ModelProto:
        raise RuntimeError("No Adapter From Version $11 for Foo")

    monkeypatch.setattr(prepare.version_converter, "convert_version", refuse)
    src = save(third_party(conv_net(), opset=11), tmp_path / "old.onnx")
    with pytest.raises(PassError, match=r"old\.onnx' from opset 11 to 13.*No Adapter"):
        Prepare().run(src, tmp_path / "out.onnx", context())
