"""OpenVINO (when installed): reads ONNX directly; computes in FP32 or BF16 by hint; runs QDQ INT8."""

from __future__ import annotations

import importlib.util
from typing import Any, ClassVar

import numpy as np

from inferno.errors import RuntimeUnavailableError
from inferno.runtimes.base import Artifact, Feeds, Runtime, register

PRECISION_HINT = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}


@register
class OpenVinoRuntime(Runtime):
    name: ClassVar[str] = "openvino"

    @classmethod
    def available(cls) -> bool:
        return importlib.util.find_spec("openvino") is not None

    @classmethod
    def supports(cls, artifact: Artifact) -> bool:
        # OpenVINO's ONNX frontend has no ORT contrib ops (fused Attention, DynamicQuantizeMatMul);
        # those graphs are recognised by their domain at load time and reported as unsupported.
        return artifact.onnx_path is not None and artifact.graph_precision in ("fp32", "int8", "int8w", "mixed")

    def load(self, artifact: Artifact) -> None:
        import openvino as ov

        device = (self.settings.provider or "CPU").upper()
        core = ov.Core()
        if device not in core.available_devices:
            raise RuntimeUnavailableError(
                f"openvino: device {device!r} is not available; available: {', '.join(core.available_devices)}"
            )
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": PRECISION_HINT.get(artifact.compute_precision, "f32"),
            "INFERENCE_NUM_THREADS": self.settings.threads,
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
        }
        group = artifact.hints.get("dynamic_quantization_group_size")
        if group is not None:
            # INT8 weights + activations quantized per group at run time: VNNI dot products.
            config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = int(group)
        if artifact.onnx_path is None:
            raise RuntimeUnavailableError("openvino runs ONNX files; this artifact has none")
        try:
            compiled = core.compile_model(str(artifact.onnx_path), device, config)
        except RuntimeError as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RuntimeUnavailableError(
                f"openvino cannot compile {artifact.onnx_path.name}: {first_line}"
            ) from exc
        self._request = compiled.create_infer_request()
        self._outputs = compiled.outputs
        self._inputs = {p.get_any_name() for p in compiled.inputs}
        self._provider = f"OpenVINO {device} ({config['INFERENCE_PRECISION_HINT']})"
        if group is not None:
            self._provider += f" dynamic-quantization group {group}"

    def run(self, feeds: Feeds) -> list[np.ndarray]:
        feeds = {k: v for k, v in feeds.items() if k in self._inputs}
        result = self._request.infer(feeds)
        return [np.array(result[o]) for o in self._outputs]

    def close(self) -> None:
        self._request = None

    @property
    def provider(self) -> str:
        return getattr(self, "_provider", "OpenVINO CPU")
