"""Quantize one node cheaply: ORT quantizes a one-node graph, the result replaces the node.

``mixed_precision`` measures every candidate node quantized alone. Asking ORT to quantize
the whole model with ``nodes_to_quantize=[node]`` for each one costs two shape inferences and
three full (de)serializations of the model per node: seconds each on a 90 MB BERT. ORT's
per-node rewrites are local (a MatMul becomes DynamicQuantizeLinear → MatMulInteger →
rescale; a QDQ node gets Q/DQ pairs on its inputs), so quantizing a graph holding only that
node and splicing ORT's output back in place gives the same graph — the tests check this
against ORT's whole-model result — in a fraction of the time. Whenever splicing is not
clearly safe (a newer opset needed, a tensor name clash), ``graft`` returns None and the
caller quantizes the whole model instead.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import helper, numpy_helper

log = logging.getLogger(__name__)


def value_types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    """Types of the graph's tensors as ONNX shape inference sees them (weights not copied)."""
    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(model)
    for init in skeleton.graph.initializer:
        init.ClearField("raw_data")  # dims and type are all inference needs
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton)
    except Exception as exc:  # inference is a hint here; contrib ops or odd graphs may fail it
        log.debug("shape inference failed: %s", exc)
        inferred = skeleton
    graph = inferred.graph
    return {vi.name: vi.type for vi in [*graph.input, *graph.value_info, *graph.output]}


def _value_info(name: str, types: dict[str, onnx.TypeProto]) -> onnx.ValueInfoProto:
    if name in types:
        return helper.make_value_info(name, types[name])
    return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)  # untyped: contrib ops


def single_node_model(
    model: onnx.ModelProto, node_name: str, types: dict[str, onnx.TypeProto]
) -> onnx.ModelProto:
    """A model holding only ``node_name``: its activations become inputs, its weights stay."""
    node = next(n for n in model.graph.node if n.name == node_name)
    weights = {init.name: init for init in model.graph.initializer}
    inputs = [_value_info(i, types) for i in dict.fromkeys(node.input) if i and i not in weights]
    initializers = [weights[i] for i in dict.fromkeys(node.input) if i in weights]
    outputs = [_value_info(o, types) for o in node.output if o]
    graph = helper.make_graph([node], "single_node", inputs, outputs, initializers)
    single = helper.make_model(graph, opset_imports=list(model.opset_import))
    single.ir_version = model.ir_version
    return single


def _opsets(model: onnx.ModelProto) -> dict[str, int]:
    return {(o.domain or "ai.onnx"): o.version for o in model.opset_import}


def _same_tensor(a: onnx.TensorProto, b: onnx.TensorProto) -> bool:
    return a.data_type == b.data_type and np.array_equal(
        numpy_helper.to_array(a), numpy_helper.to_array(b)
    )


def graft(
    host: onnx.ModelProto, node_name: str, quantized: onnx.ModelProto
) -> onnx.ModelProto | None:
    """``host`` with ``node_name`` replaced by the nodes of ``quantized`` (a one-node model).

    ORT's nodes go where the original node was, which keeps the graph topologically sorted:
    they read only the original node's inputs and the new weights.

    Returns:
        The new model, or None when splicing is not clearly equivalent: the quantized
        graph needs a newer opset than the host, or one of its tensor names already means
        something else in the host.
    """
    host_opsets, new_opsets = _opsets(host), _opsets(quantized)
    if any(host_opsets.get(domain, version) < version for domain, version in new_opsets.items()):
        return None
    nodes = list(host.graph.node)
    index = next(i for i, n in enumerate(nodes) if n.name == node_name)
    others = nodes[:index] + nodes[index + 1 :]
    weights = {init.name: init for init in host.graph.initializer}
    # Weights only the replaced node read go: ORT may reuse their names (a DequantizeLinear
    # of the quantized bias outputs the bias's old name).
    used = {t for n in others for t in n.input} | {o.name for o in host.graph.output}
    dropped = {i for i in nodes[index].input if i in weights and i not in used}
    kept = {name: init for name, init in weights.items() if name not in dropped}
    taken = (
        {t for n in others for t in (*n.input, *n.output)}
        | set(kept)
        | {i.name for i in host.graph.input}
    )
    added = []
    for init in quantized.graph.initializer:
        if init.name in kept:
            if not _same_tensor(init, kept[init.name]):
                return None  # e.g. a Gemm weight ORT transposed in place under its old name
        elif init.name in taken:
            return None
        else:
            added.append(init)
    boundary = {i.name for i in quantized.graph.input} | {o.name for o in quantized.graph.output}
    if ({o for n in quantized.graph.node for o in n.output} - boundary) & taken:
        return None
    trial = onnx.ModelProto()
    trial.CopyFrom(host)
    del trial.graph.node[:]
    trial.graph.node.extend([*nodes[:index], *quantized.graph.node, *nodes[index + 1 :]])
    for position in reversed(
        [i for i, init in enumerate(trial.graph.initializer) if init.name in dropped]
    ):
        del trial.graph.initializer[position]
    trial.graph.initializer.extend(added)
    for domain, version in new_opsets.items():
        if domain not in host_opsets:
            trial.opset_import.append(
                helper.make_opsetid("" if domain == "ai.onnx" else domain, version)
            )
    return trial
