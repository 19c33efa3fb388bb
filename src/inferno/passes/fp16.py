"""``fp16``: convert float tensors to FP16 for GPU execution (ORT's ``float16`` converter)."""

from __future__ import annotations

from pathlib import Path

import onnx

from inferno.passes._io import load_model, save_model, translate_errors
from inferno.passes.base import Pass, PassContext, PassOptions, register
from inferno.passes.bf16 import Bf16


@register
class Fp16(Pass):
    """FP16 weights and compute with ``onnxruntime.transformers.float16.convert_float_to_float16``.

    A GPU precision: CUDA and TensorRT have fast FP16 kernels; ONNX Runtime's CPU EP runs
    most FP16 ops by converting to FP32 internally, which is slower than the FP32 graph. So
    ``applies_to`` wants CUDA, while ``run`` works anywhere (the result is valid ONNX).

    Inputs and outputs stay FP32 by default (``Cast`` nodes at the edges), so callers feed
    the same arrays as before. Ops on ORT's default block list (``Range``, ``TopK``, ``CumSum``,
    ``NonMaxSuppression``, the ONNX-ML ops, ...) stay FP32 with casts around them.
    """

    name = "fp16"
    precision = "fp16"

    class Options(PassOptions):
        keep_io_types: bool = True
        """Keep graph inputs and outputs FP32, casting at the edges."""
        op_block_list: tuple[str, ...] | None = None
        """Op types to keep in FP32; None uses ORT's ``float16.DEFAULT_OP_BLOCK_LIST``."""

    options: Options

    def applies_to(self, model: onnx.ModelProto, ctx: PassContext) -> bool:
        """True when ORT has the CUDA execution provider or a GPU is present."""
        return has_gpu(ctx)

    def run(self, src: Path, dst: Path, ctx: PassContext) -> None:
        """Convert ``src`` to FP16 and write ``dst``.

        Raises:
            PassError: ``src`` is unreadable or the converter fails on it.
        """
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = load_model(src, self.name)
        block = list(self.options.op_block_list) if self.options.op_block_list is not None else None
        with translate_errors(self.name, src):
            converted = convert_float_to_float16(
                model,
                keep_io_types=self.options.keep_io_types,
                op_block_list=block,
            )
            save_model(converted, dst)


def has_gpu(ctx: PassContext) -> bool:
    hardware = ctx.hardware
    return "CUDAExecutionProvider" in hardware.ort_providers or bool(hardware.gpus)


@register
class Fp16Compute(Bf16):
    """Mark an FP32 graph for FP16 execution by the runtime; the graph itself is unchanged.

    The runtimes that take this pick FP16 themselves, better than a blanket conversion:
    TensorRT's FP16 builder flag chooses FP16 or FP32 per layer by measured speed and keeps
    FP32 where a layer needs it; PyTorch casts the source module's weights to FP16;
    OpenVINO computes in FP16 on CPUs with AVX512-FP16. Only where a GPU or such a CPU is
    present (elsewhere CPU FP16 arithmetic is emulated or silently computed in another
    precision).
    """

    name = "fp16_compute"
    precision = "fp16"

    def applies_to(self, model: onnx.ModelProto, ctx: PassContext) -> bool:
        """True with a GPU (or ORT's CUDA provider), or a CPU that computes FP16 (AVX512-FP16)."""
        return has_gpu(ctx) or ctx.hardware.cpu.fp16_accelerated
