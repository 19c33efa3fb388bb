"""ONNX Runtime: CPU EP always; CUDA and TensorRT EPs when onnxruntime-gpu provides them."""

from __future__ import annotations

import importlib.util
from typing import ClassVar

import numpy as np

from inferno.errors import RuntimeUnavailableError
from inferno.runtimes.base import Artifact, Feeds, Runtime, register

CPU = "CPUExecutionProvider"
PROVIDER_ALIASES = {
    "cpu": CPU,
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


@register
class OnnxRuntime(Runtime):
    """An ``InferenceSession`` with one requested execution provider and no silent fallback."""

    name: ClassVar[str] = "onnxruntime"

    @classmethod
    def available(cls) -> bool:
        return importlib.util.find_spec("onnxruntime") is not None

    @classmethod
    def supports(cls, artifact: Artifact) -> bool:
        # ORT runs FP32 and INT8 (QDQ and integer ops) graphs as written. FP16 graphs are for
        # GPU providers, which accelerate does not request yet; there is no CPU BF16 mode.
        return (
            artifact.onnx_path is not None
            and artifact.compute_precision == "fp32"
            and artifact.graph_precision != "fp16"
        )

    @staticmethod
    def _requested(provider: str | None) -> str:
        if provider is None:
            return CPU
        return PROVIDER_ALIASES.get(provider.lower(), provider)

    def load(self, artifact: Artifact) -> None:
        import onnxruntime as ort

        requested = self._requested(self.settings.provider)
        if requested not in ort.get_available_providers():
            raise RuntimeUnavailableError(
                f"onnxruntime: execution provider {requested!r} is not available here; "
                f"available: {', '.join(ort.get_available_providers())}"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.settings.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        providers = [requested] if requested == CPU else [requested, CPU]
        self._session = ort.InferenceSession(str(artifact.onnx_path), options, providers=providers)
        used = self._session.get_providers()[0]
        if used != requested:  # ORT falls back silently; inferno does not
            raise RuntimeUnavailableError(
                f"onnxruntime: asked for {requested} but the session runs on {used}"
            )
        self._provider = used
        self._output_names = [o.name for o in self._session.get_outputs()]
        self._input_names = {i.name for i in self._session.get_inputs()}

    def run(self, feeds: Feeds) -> list[np.ndarray]:
        feeds = {k: v for k, v in feeds.items() if k in self._input_names}
        return list(self._session.run(self._output_names, feeds))

    def close(self) -> None:
        self._session = None

    @property
    def provider(self) -> str:
        return getattr(self, "_provider", CPU)
