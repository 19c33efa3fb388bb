"""``graph_optimization``: ORT's optimizer, saved offline, changes structure but not results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from inferno.errors import PassError
from inferno.passes import make_pass

from .graphs import OPSET, bert_ffn_block, mlp, op_counts, random_feeds, save
from .support import context, run


def _domains(path: Path) -> set[str]:
    return {node.domain or "ai.onnx" for node in onnx.load(str(path)).graph.node}


@pytest.mark.parametrize("level", ["basic", "extended", "all"])
def test_every_level_keeps_the_outputs(level: str, tmp_path: Path) -> None:
    model = bert_ffn_block()
    src, dst = save(model, tmp_path / "ffn.onnx"), tmp_path / "opt.onnx"
    make_pass("graph_optimization", level=level).run(src, dst, context())
    feeds = random_feeds(model, 3, seed=3)
    for ref, out in zip(run(src, feeds), run(dst, feeds), strict=True):
        np.testing.assert_allclose(out[0], ref[0], rtol=1e-5, atol=1e-5)


def test_basic_stays_standard_onnx_and_extended_fuses_into_contrib_ops(tmp_path: Path) -> None:
    src = save(bert_ffn_block(), tmp_path / "ffn.onnx")
    make_pass("graph_optimization", level="basic").run(src, tmp_path / "basic.onnx", context())
    make_pass("graph_optimization", level="extended").run(
        src, tmp_path / "extended.onnx", context()
    )
    assert _domains(tmp_path / "basic.onnx") == {"ai.onnx"}
    assert op_counts(tmp_path / "basic.onnx")["Erf"] == 1
    extended = op_counts(tmp_path / "extended.onnx")
    assert "com.microsoft" in _domains(tmp_path / "extended.onnx")
    assert extended.get("SkipLayerNormalization") == 1
    assert "Erf" not in extended and "LayerNormalization" not in extended


def test_default_level_is_extended() -> None:
    assert make_pass("graph_optimization").options.level == "extended"


def test_basic_folds_a_constant_subgraph(tmp_path: Path) -> None:
    model = mlp()
    # y = MatMul(x, W) with W computed as Add(W0, zeros): constant folding removes the Add.
    first = model.graph.node[0]
    weight = first.input[1]
    zeros = helper.make_tensor("zeros", TensorProto.FLOAT, [1], [0.0])
    model.graph.initializer.append(zeros)
    model.graph.node.insert(
        0, helper.make_node("Add", [weight, "zeros"], ["folded_w"], name="fold_me")
    )
    first.input[1] = "folded_w"
    src, dst = save(model, tmp_path / "m.onnx"), tmp_path / "o.onnx"
    make_pass("graph_optimization", level="basic").run(src, dst, context())
    assert "fold_me" not in {n.name for n in onnx.load(str(dst)).graph.node}
    feeds = random_feeds(model, 1)
    np.testing.assert_allclose(run(dst, feeds)[0][0], run(src, feeds)[0][0], rtol=1e-5, atol=1e-5)


def _custom_op_model(ir_version: int) -> onnx.ModelProto:
    node = helper.make_node("Frobnicate", ["x"], ["y"], name="odd", domain="example.custom")
    graph = helper.make_graph(
        [node],
        "odd",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid("example.custom", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = ir_version
    return model


def test_an_op_ort_does_not_know_raises_pass_error(tmp_path: Path) -> None:
    src = save(_custom_op_model(ir_version=8), tmp_path / "custom.onnx")
    with pytest.raises(
        PassError, match=r"graph_optimization failed on '.*custom\.onnx'.*Frobnicate"
    ):
        make_pass("graph_optimization").run(src, tmp_path / "o.onnx", context())


def test_an_ir_version_newer_than_ort_raises_pass_error(tmp_path: Path) -> None:
    src = save(_custom_op_model(ir_version=99), tmp_path / "future.onnx")
    with pytest.raises(PassError, match=r"future\.onnx.*IR version"):
        make_pass("graph_optimization").run(src, tmp_path / "o.onnx", context())
