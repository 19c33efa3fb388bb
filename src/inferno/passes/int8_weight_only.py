"""``int8_weight_only``: INT8 weights behind ``DequantizeLinear``, activations left in float.

Runtimes that recognise "compressed weights" (OpenVINO reads ``DequantizeLinear`` on a
constant as a decompression subgraph) keep the weights in INT8 and, with dynamic activation
quantization enabled, run the MatMul as an INT8 × INT8 dot product (VNNI/AMX), quantizing
activations per group at run time. Unlike ``int8_dynamic`` (one scale per activation
tensor) the groups are small, so accuracy stays close to FP32.

Why hand-written: ONNX Runtime's quantizers either quantize activations too (QDQ) or emit
the ORT-only ``MatMulNBits`` op, and ``MatMulNBitsQuantizer`` refuses QDQ output for 8 bits.
The rewrite is one symmetric per-output-channel scale per weight, a dozen lines of numpy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from inferno.passes._io import (
    QDQ_AXIS_OPSET,
    default_opset,
    load_model,
    save_model,
    translate_errors,
)
from inferno.passes.base import Pass, PassContext, PassOptions, register


@register
class Int8WeightOnly(Pass):
    """Per-output-channel symmetric INT8 weights for MatMuls with a constant 2-D B input."""

    name = "int8_weight_only"
    precision = "int8w"

    class Options(PassOptions):
        min_elements: int = 4096
        """Leave smaller weights in FP32: their dequantization costs more than it saves."""
        nodes_to_exclude: tuple[str, ...] = ()
        """MatMul node names to keep in FP32."""

    options: Options

    def applies_to(self, model: onnx.ModelProto, ctx: PassContext) -> bool:
        """True when some MatMul has a large constant float weight (and opset >= 13 for ``axis``)."""
        return (default_opset(model) or 0) >= QDQ_AXIS_OPSET and bool(self._targets(model))

    def _targets(self, model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
        inits = {i.name: i for i in model.graph.initializer}
        found = {}
        for node in model.graph.node:
            weight = inits.get(node.input[1]) if node.op_type == "MatMul" else None
            if (
                weight is not None
                and node.name not in self.options.nodes_to_exclude
                and weight.data_type == onnx.TensorProto.FLOAT
                and len(weight.dims) == 2
                and int(np.prod(weight.dims)) >= self.options.min_elements
            ):
                found[weight.name] = weight
        return found

    def run(self, src: Path, dst: Path, ctx: PassContext) -> None:
        """Rewrite every target weight as INT8 + scale + ``DequantizeLinear``; write ``dst``.

        Raises:
            PassError: ``src`` is unreadable or cannot be written back.
        """
        model = load_model(src, self.name)
        with translate_errors(self.name, src):
            targets = self._targets(model)
            graph = model.graph
            kept = [i for i in graph.initializer if i.name not in targets]
            nodes = []
            for name, tensor in targets.items():
                q, scale = quantize_per_channel(numpy_helper.to_array(tensor))
                kept += [
                    numpy_helper.from_array(q, f"{name}_int8"),
                    numpy_helper.from_array(scale, f"{name}_scale"),
                    numpy_helper.from_array(np.zeros_like(scale, dtype=np.int8), f"{name}_zero"),
                ]
                nodes.append(helper.make_node(
                    "DequantizeLinear", [f"{name}_int8", f"{name}_scale", f"{name}_zero"], [name],
                    name=f"{name}_dequantize", axis=1,
                ))
            del graph.initializer[:]
            graph.initializer.extend(kept)
            rest = list(graph.node)
            del graph.node[:]
            graph.node.extend(nodes + rest)  # dequantized weights exist before any consumer
            save_model(model, dst)


def quantize_per_channel(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric INT8 with one scale per output column (axis 1 of a MatMul's B)."""
    scale = np.abs(weight).max(axis=0) / 127.0
    scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
    q = np.clip(np.rint(weight / scale), -127, 127).astype(np.int8)
    return q, scale
