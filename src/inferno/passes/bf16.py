"""``bf16``: compute in BF16 at run time; the graph itself stays FP32."""

from __future__ import annotations

from pathlib import Path

import onnx

from inferno.hardware import GpuInfo, HardwareInfo
from inferno.passes._io import load_model, save_model, translate_errors
from inferno.passes.base import Pass, PassContext, register

MIN_BF16_COMPUTE_CAPABILITY = (8, 0)
"""Ampere: the first NVIDIA generation with BF16 tensor cores."""


def gpu_has_bf16(gpu: GpuInfo) -> bool:
    """True when the GPU's compute capability (``"8.0"``, ``"9.0"``, ...) is Ampere or newer."""
    try:
        major, _, minor = gpu.compute_capability.partition(".")
        return (int(major), int(minor or 0)) >= MIN_BF16_COMPUTE_CAPABILITY
    except ValueError:  # an unparseable probe result means "unknown", not "yes"
        return False


def bf16_accelerated(hardware: HardwareInfo) -> bool:
    """BF16 pays off here: AVX512-BF16/AMX-BF16 on the CPU, or an Ampere-or-newer GPU."""
    return hardware.cpu.bf16_accelerated or any(gpu_has_bf16(g) for g in hardware.gpus)


@register
class Bf16(Pass):
    """Mark a graph for BF16 execution; the written graph is the input, unchanged.

    BF16 is a *runtime* precision, not an ONNX rewrite: ONNX Runtime's CPU execution
    provider has no BF16 GEMM kernels, so a graph converted to BF16 tensors would run slower
    (or not at all) there. The runtimes that do compute in BF16 take an FP32 graph plus a
    hint: OpenVINO's ``INFERENCE_PRECISION_HINT=bf16`` and PyTorch's ``torch.autocast``. So
    this pass copies the graph and its ``precision = "bf16"`` tells the runtime to compute in
    BF16 (weights are rounded at compile time, accumulation stays FP32 in those kernels).

    It applies only where BF16 is accelerated: a CPU with AVX512-BF16 or AMX-BF16, or a CUDA
    GPU of compute capability 8.0 or newer. Elsewhere emulated BF16 is slower than FP32.
    """

    name = "bf16"
    precision = "bf16"

    def applies_to(self, model: onnx.ModelProto, ctx: PassContext) -> bool:
        """True when the CPU or a GPU has BF16 hardware support."""
        return bf16_accelerated(ctx.hardware)

    def run(self, src: Path, dst: Path, ctx: PassContext) -> None:
        """Write ``src`` unchanged to ``dst`` (re-serialized, external data included).

        Raises:
            PassError: ``src`` is missing or not a readable ONNX model.
        """
        model = load_model(src, self.name)
        with translate_errors(self.name, src):
            save_model(model, dst)
