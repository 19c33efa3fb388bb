"""Tiny ONNX graphs built in code for the pass tests, the way ONNX Runtime tests its quantizer.

Every builder is seeded and uses realistic (He-initialised) weights, so quantization error is
the size it would be on a real layer, not zero and not noise.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
MLP_WIDTHS = (16, 64, 64, 32, 8)


def _model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    inits: list[onnx.TensorProto],
    name: str,
) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _tensor(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(value.astype(np.float32), name)


def mlp(
    seed: int = 0,
    widths: Sequence[int] = MLP_WIDTHS,
    outlier_layer: int | None = None,
    outlier_scale: float = 1000.0,
) -> onnx.ModelProto:
    """``len(widths) - 1`` layers of MatMul + Add (+ Relu except the last), input ``x``.

    Node names follow the PyTorch exporter: ``/layers.{i}/MatMul``.

    With ``outlier_layer=k`` (k >= 1), row 0 of layer k's weight is ``outlier_scale`` times too
    large and the activation channel feeding it (column 0 of layer k-1) is as many times too
    small, so the FP32 function is unchanged in spirit but quantizing layer k's weight wipes out
    every other row (their values round to zero against the outlier's scale).
    """
    rng = np.random.default_rng(seed)
    weights = [rng.normal(0, np.sqrt(2 / i), (i, o)) for i, o in itertools.pairwise(widths)]
    biases = [rng.normal(0, 0.05, o) for o in widths[1:]]
    if outlier_layer is not None:
        if not 1 <= outlier_layer < len(weights):
            raise ValueError(
                f"outlier_layer must be in [1, {len(weights) - 1}], got {outlier_layer}"
            )
        weights[outlier_layer - 1][:, 0] /= outlier_scale
        biases[outlier_layer - 1][0] = abs(biases[outlier_layer - 1][0]) / outlier_scale
        weights[outlier_layer][0, :] *= outlier_scale
    nodes, inits, x = [], [], "x"
    last = len(weights) - 1
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        p = f"/layers.{i}"
        inits += [_tensor(f"layers.{i}.weight", w), _tensor(f"layers.{i}.bias", b)]
        nodes.append(
            helper.make_node(
                "MatMul", [x, f"layers.{i}.weight"], [f"{p}/MatMul_output_0"], name=f"{p}/MatMul"
            )
        )
        out = "y" if i == last else f"{p}/Add_output_0"
        nodes.append(
            helper.make_node(
                "Add", [f"{p}/MatMul_output_0", f"layers.{i}.bias"], [out], name=f"{p}/Add"
            )
        )
        if i != last:
            nodes.append(helper.make_node("Relu", [out], [f"{p}/Relu_output_0"], name=f"{p}/Relu"))
            x = f"{p}/Relu_output_0"
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", widths[0]])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", widths[-1]])]
    return _model(nodes, inputs, outputs, inits, "mlp")


def conv_net(seed: int = 0) -> onnx.ModelProto:
    """Conv + Relu + Conv + GlobalAveragePool + Flatten + Gemm on a ``[N, 3, 16, 16]`` image."""
    rng = np.random.default_rng(seed)
    inits = [
        _tensor("conv1.weight", rng.normal(0, np.sqrt(2 / 27), (8, 3, 3, 3))),
        _tensor("conv1.bias", rng.normal(0, 0.05, 8)),
        _tensor("conv2.weight", rng.normal(0, np.sqrt(2 / 72), (16, 8, 3, 3))),
        _tensor("conv2.bias", rng.normal(0, 0.05, 16)),
        _tensor("fc.weight", rng.normal(0, np.sqrt(1 / 16), (10, 16))),
        _tensor("fc.bias", rng.normal(0, 0.05, 10)),
    ]
    pads = [1, 1, 1, 1]
    nodes = [
        helper.make_node(
            "Conv", ["x", "conv1.weight", "conv1.bias"], ["c1"], name="/conv1/Conv", pads=pads
        ),
        helper.make_node("Relu", ["c1"], ["r1"], name="/relu/Relu"),
        helper.make_node(
            "Conv", ["r1", "conv2.weight", "conv2.bias"], ["c2"], name="/conv2/Conv", pads=pads
        ),
        helper.make_node("GlobalAveragePool", ["c2"], ["p"], name="/pool/GlobalAveragePool"),
        helper.make_node("Flatten", ["p"], ["f"], name="/Flatten"),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["y"], name="/fc/Gemm", transB=1),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 16, 16])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])]
    return _model(nodes, inputs, outputs, inits, "conv_net")


def bert_ffn_block(seed: int = 0, hidden: int = 32, intermediate: int = 64) -> onnx.ModelProto:
    """A BERT feed-forward sub-block as the PyTorch exporter writes it.

    ``x [batch, seq, hidden]`` → MatMul + Add (bias) + exact Erf-GELU → MatMul + Add (bias)
    → Add (residual) → LayerNormalization. ORT's transformer optimizer fuses the Erf-GELU
    with its bias into ``BiasGelu`` and the residual Add + LayerNormalization into
    ``SkipLayerNormalization``.
    """
    rng = np.random.default_rng(seed)
    h, i = hidden, intermediate
    inits = [
        _tensor("fc1.weight", rng.normal(0, np.sqrt(2 / h), (h, i))),
        _tensor("fc1.bias", rng.normal(0, 0.05, i)),
        _tensor("fc2.weight", rng.normal(0, np.sqrt(2 / i), (i, h))),
        _tensor("fc2.bias", rng.normal(0, 0.05, h)),
        _tensor("ln.weight", 1 + rng.normal(0, 0.05, h)),
        _tensor("ln.bias", rng.normal(0, 0.05, h)),
        _tensor("sqrt2", np.array(np.sqrt(2.0))),
        _tensor("one", np.array(1.0)),
        _tensor("half", np.array(0.5)),
    ]
    n = helper.make_node
    nodes = [
        n("MatMul", ["x", "fc1.weight"], ["m1"], name="/intermediate/dense/MatMul"),
        n("Add", ["fc1.bias", "m1"], ["a1"], name="/intermediate/dense/Add"),
        n("Div", ["a1", "sqrt2"], ["d"], name="/intermediate/act/Div"),
        n("Erf", ["d"], ["e"], name="/intermediate/act/Erf"),
        n("Add", ["e", "one"], ["e1"], name="/intermediate/act/Add"),
        n("Mul", ["a1", "e1"], ["g0"], name="/intermediate/act/Mul"),
        n("Mul", ["g0", "half"], ["g"], name="/intermediate/act/Mul_1"),
        n("MatMul", ["g", "fc2.weight"], ["m2"], name="/output/dense/MatMul"),
        n("Add", ["fc2.bias", "m2"], ["a2"], name="/output/dense/Add"),
        n("Add", ["a2", "x"], ["res"], name="/output/Add"),
        n(
            "LayerNormalization",
            ["res", "ln.weight", "ln.bias"],
            ["y"],
            name="/output/LayerNorm/LayerNormalization",
            axis=-1,
            epsilon=1e-12,
        ),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", h])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", h])]
    return _model(nodes, inputs, outputs, inits, "bert_ffn_block")


def tiny_bert(path: Path, seed: int = 0, layers: int = 2) -> Path:
    """Export a random-weight ``transformers.BertModel`` (hidden 32, 2 heads) to ``path``.

    Needs torch and transformers (callers skip with ``pytest.importorskip``). Inputs are
    ``input_ids``, ``attention_mask`` and ``token_type_ids``, all int64 ``[batch, seq]``.
    """
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        attn_implementation="eager",
    )
    bert = BertModel(config).eval()

    class Wrapper(
        torch.nn.Module
    ):  # positional forward: BertModel's own signature varies by version
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):  # type: ignore[no-untyped-def]
            out = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            return out.last_hidden_state, out.pooler_output

    model = Wrapper().eval()
    ids = torch.randint(0, 100, (2, 8))
    args = (ids, torch.ones_like(ids), torch.zeros_like(ids))
    names = ["input_ids", "attention_mask", "token_type_ids"]
    dynamic = {name: {0: "batch", 1: "seq"} for name in names}
    with warnings.catch_warnings():  # the tracer warns about every Python-side shape check
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            model,
            args,
            str(path),
            input_names=names,
            output_names=["last_hidden_state", "pooler_output"],
            dynamic_axes=dynamic,
            opset_version=17,
            dynamo=False,
        )
    return path


def third_party(
    model: onnx.ModelProto, opset: int | None = None, ir_version: int | None = None
) -> onnx.ModelProto:
    """``model`` as Paddle2ONNX-style exporters write it: every initializer a ``Constant`` node.

    The Constant nodes come first and keep the initializers' names; ``opset`` (an old one,
    e.g. 11) replaces the default-domain version, ``ir_version`` the IR version. The graph's
    ops must mean the same at that opset (MatMul, Conv, Gemm, Relu, ... do).
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    constants = [
        helper.make_node("Constant", [], [init.name], name=f"{init.name}_Constant", value=init)
        for init in graph.initializer
    ]
    nodes = constants + list(graph.node)
    del graph.initializer[:]
    del graph.node[:]
    graph.node.extend(nodes)
    if opset is not None:
        for entry in out.opset_import:
            if entry.domain in ("", "ai.onnx"):
                entry.version = opset
    if ir_version is not None:
        out.ir_version = ir_version
    onnx.checker.check_model(out)
    return out


def if_net(seed: int = 0) -> onnx.ModelProto:
    """``y = If(flag, then: x @ W, else: relu(x) @ (W * 2))`` with ``W`` a main-graph Constant.

    Both branches read ``W`` from the outer scope; the else branch holds a Constant of its own
    (the 2). Inputs: ``x [batch, 8]`` float, ``flag []`` bool.
    """
    rng = np.random.default_rng(seed)
    weight = _tensor("W", rng.normal(0, 0.5, (8, 4)))
    out_info = helper.make_tensor_value_info("branch_out", TensorProto.FLOAT, None)
    then_graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["branch_out"], name="then/MatMul")],
        "then",
        [],
        [out_info],
    )
    two = helper.make_node(
        "Constant", [], ["two"], name="else/two", value=_tensor("", np.array(2.0))
    )
    else_out = helper.make_tensor_value_info("branch_out", TensorProto.FLOAT, None)
    else_graph = helper.make_graph(
        [
            two,
            helper.make_node("Mul", ["W", "two"], ["W2"], name="else/Mul"),
            helper.make_node("Relu", ["x"], ["rx"], name="else/Relu"),
            helper.make_node("MatMul", ["rx", "W2"], ["branch_out"], name="else/MatMul"),
        ],
        "else",
        [],
        [else_out],
    )
    nodes = [
        helper.make_node("Constant", [], ["W"], name="W_Constant", value=weight),
        helper.make_node(
            "If", ["flag"], ["y"], name="/If", then_branch=then_graph, else_branch=else_graph
        ),
    ]
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8]),
        helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])]
    return _model(nodes, inputs, outputs, [], "if_net")


def random_feeds(
    model: onnx.ModelProto,
    batches: int,
    batch: int = 4,
    seed: int = 1,
    dims: dict[str, int] | None = None,
) -> list[dict[str, np.ndarray]]:
    """``batches`` random feeds for a float-input graph; symbolic dims take ``dims`` (``batch`` default)."""
    rng = np.random.default_rng(seed)
    dims = {"batch": batch, "seq": 8, **(dims or {})}
    feeds = []
    for _ in range(batches):
        feed = {}
        for inp in model.graph.input:
            shape = [
                d.dim_value if d.HasField("dim_value") else dims[d.dim_param]
                for d in inp.type.tensor_type.shape.dim
            ]
            feed[inp.name] = rng.normal(0, 1, shape).astype(np.float32)
        feeds.append(feed)
    return feeds


def bert_feeds(
    batches: int, batch: int = 2, seq: int = 8, seed: int = 1
) -> list[dict[str, np.ndarray]]:
    """Random token feeds for :func:`tiny_bert`."""
    rng = np.random.default_rng(seed)
    return [
        {
            "input_ids": rng.integers(0, 100, (batch, seq), dtype=np.int64),
            "attention_mask": np.ones((batch, seq), dtype=np.int64),
            "token_type_ids": np.zeros((batch, seq), dtype=np.int64),
        }
        for _ in range(batches)
    ]


def save(model: onnx.ModelProto, path: Path) -> Path:
    """Write ``model`` to ``path`` and return the path."""
    onnx.save(model, str(path))
    return path


def op_counts(path: Path) -> dict[str, int]:
    """Node count by op type of the graph at ``path``."""
    counts: dict[str, int] = {}
    for node in onnx.load(str(path)).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
