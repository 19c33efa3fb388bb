"""``int8_dynamic``: INT8 weights, activations quantized at run time (ORT ``quantize_dynamic``)."""

from __future__ import annotations

from pathlib import Path

import onnx

from inferno.passes import _quant
from inferno.passes._io import check_model, op_types, translate_errors
from inferno.passes.base import Pass, PassContext, PassOptions, register


@register
class Int8Dynamic(Pass):
    """Dynamic INT8 quantization with ``onnxruntime.quantization.quantize_dynamic``.

    Weights become INT8 once, offline; each activation is quantized per tensor (UINT8) at run
    time from its own min/max, so no calibration data is needed. A MatMul becomes
    ``DynamicQuantizeLinear`` → ``MatMulInteger`` → rescale. Only MatMuls whose B input is an
    initializer are quantized (ORT's ``MatMulConstBOnly``); ORT's quantizer also rewrites
    ``Gemm`` (alpha = beta = 1, no transA) as MatMul + Add first.

    Works on graphs with ORT contrib ops (after ``transformer_fusion``): the quantizer is told
    to treat tensors ONNX shape inference cannot type as FLOAT.
    """

    name = "int8_dynamic"
    precision = "int8"

    class Options(PassOptions):
        per_channel: bool = False
        """One weight scale per output channel instead of per tensor: more accurate, a bit slower."""
        op_types: tuple[str, ...] = ("MatMul",)
        """Op types to quantize. Default MatMul only: quantizing the embedding ``Gather`` saves
        memory but costs accuracy; add ``"Gather"``, ``"Conv"`` or ``"Attention"`` explicitly."""
        reduce_range: bool = False
        """7-bit weights: avoids int16 accumulation overflow on CPUs without VNNI."""
        nodes_to_exclude: tuple[str, ...] = ()
        """Node names to keep in FP32."""

    options: Options

    def applies_to(self, model: onnx.ModelProto, ctx: PassContext) -> bool:
        """True when the graph has at least one node of ``op_types`` (Gemm counts as MatMul)."""
        wanted = set(self.options.op_types)
        if "MatMul" in wanted:
            wanted.add("Gemm")  # ORT's quantizer rewrites Gemm as MatMul + Add first
        return bool(op_types(model) & wanted)

    def run(self, src: Path, dst: Path, ctx: PassContext) -> None:
        """Quantize ``src`` and write ``dst``.

        Raises:
            PassError: ``src`` is unreadable or ORT's quantizer fails on it.
        """
        check_model(src, self.name)
        with translate_errors(self.name, src):
            _quant.quantize_dynamic(
                src,
                dst,
                op_types=self.options.op_types,
                per_channel=self.options.per_channel,
                reduce_range=self.options.reduce_range,
                nodes_to_exclude=self.options.nodes_to_exclude,
            )
