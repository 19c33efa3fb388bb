"""OpenVINO (when installed): reads ONNX directly; computes in FP32 or BF16 by hint; runs QDQ INT8.

Two registered runtimes:

- ``openvino``: one stream using every thread (intra-op parallel): best batch-1 latency.
- ``openvino-streams``: one stream per thread, a batch split across them (data parallel). On
  small per-op work (short sentences) it skips the cross-core synchronization of every op,
  which measured faster at batch 32 on 2 cores; batch-1 latency is worse. Measured like
  every other runtime; the objective decides.
"""

from __future__ import annotations

import importlib.util
import re
import threading
from typing import Any, ClassVar

import numpy as np

from inferno.errors import RuntimeUnavailableError
from inferno.runtimes.base import Artifact, Feeds, Runtime, device_of, register

PRECISION_HINT = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}


OPENVINO_NOISE = re.compile(r"^(Exception from src/|Check '.*' failed at src/)")
"""OpenVINO's messages open with source locations, one line per layer the error crossed."""


def openvino_reason(exc: BaseException, limit: int = 300) -> str:
    """The lines of an OpenVINO error that say something, joined, cut at ``limit`` characters."""
    lines = [line.strip() for line in str(exc).splitlines()]
    said = [line for line in lines if line and not OPENVINO_NOISE.match(line)]
    text = " ".join(said or [line for line in lines if line] or [type(exc).__name__])
    return text if len(text) <= limit else text[: limit - 3] + "..."


@register
class OpenVinoRuntime(Runtime):
    name: ClassVar[str] = "openvino"
    # Every change of input shape costs OpenVINO's CPU plugin a re-plan of the graph: about
    # 2 ms per call for MiniLM here, against 3 ms of compute for a short sentence at batch 1
    # (serving with varying lengths measured 5.0 ms, a constant padded length 3.1 ms).
    sequence_multiple: ClassVar[int] = 16

    @property
    def streams(self) -> int:
        return 1

    @classmethod
    def available(cls) -> bool:
        return importlib.util.find_spec("openvino") is not None

    @classmethod
    def supports(cls, artifact: Artifact, provider: str | None = None) -> bool:
        # OpenVINO's ONNX frontend has no ORT contrib ops (fused Attention, DynamicQuantizeMatMul);
        # the variant builder marks such graphs ORT-only. Its GPU plugin is for Intel GPUs: on
        # a CUDA machine it is a CPU runtime only. FP16 compute is not asked of it (no AVX512-FP16 here).
        return (
            device_of(provider) == "cpu"
            and artifact.onnx_path is not None
            and artifact.graph_precision in ("fp32", "int8", "int8w", "mixed")
            and artifact.compute_precision in ("fp32", "bf16")
        )

    def _config(self, artifact: Artifact) -> dict[str, Any]:
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": PRECISION_HINT.get(artifact.compute_precision, "f32"),
            "INFERENCE_NUM_THREADS": self.settings.threads,
            "PERFORMANCE_HINT": "LATENCY" if self.streams == 1 else "THROUGHPUT",
            "NUM_STREAMS": self.streams,
        }
        group = artifact.hints.get("dynamic_quantization_group_size")
        if group is not None:
            # INT8 weights + activations quantized per group at run time: VNNI dot products.
            config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = int(group)
        return config

    def load(self, artifact: Artifact) -> None:
        import openvino as ov

        device = (self.settings.provider or "CPU").upper()
        core = ov.Core()
        if device not in core.available_devices:
            raise RuntimeUnavailableError(
                f"openvino: device {device!r} is not available; available: {', '.join(core.available_devices)}"
            )
        if artifact.onnx_path is None:
            raise RuntimeUnavailableError("openvino runs ONNX files; this artifact has none")
        config = self._config(artifact)
        try:
            compiled = core.compile_model(str(artifact.onnx_path), device, config)
        except RuntimeError as exc:
            raise RuntimeUnavailableError(
                f"openvino cannot compile {artifact.onnx_path.name}: {openvino_reason(exc)}"
            ) from exc
        # Streams split a batch along axis 0: only where every tensor has its rows there.
        self._splittable = self.streams > 1 and bool(artifact.hints.get("batch_first", True))
        self._requests = [compiled.create_infer_request() for _ in range(self.streams)]
        self._lock = threading.Lock()  # infer requests are not shareable between callers
        self._outputs = compiled.outputs
        self._inputs = {p.get_any_name() for p in compiled.inputs}
        self._provider = f"OpenVINO {device} ({config['INFERENCE_PRECISION_HINT']}"
        self._provider += f", {self.streams} streams)" if self.streams > 1 else ")"
        if "DYNAMIC_QUANTIZATION_GROUP_SIZE" in config:
            self._provider += f" dynamic-quantization group {config['DYNAMIC_QUANTIZATION_GROUP_SIZE']}"

    def run(self, feeds: Feeds) -> list[np.ndarray]:
        feeds = {k: v for k, v in feeds.items() if k in self._inputs}
        batch = len(next(iter(feeds.values()))) if self._splittable else 1
        parts = min(len(self._requests), batch)
        with self._lock:
            if parts <= 1:
                result = self._requests[0].infer(feeds)
                return [np.array(result[o]) for o in self._outputs]
            bounds = np.linspace(0, batch, parts + 1).astype(int)
            for request, lo, hi in zip(self._requests, bounds[:-1], bounds[1:], strict=False):
                request.start_async({k: v[lo:hi] for k, v in feeds.items()})
            for request in self._requests[:parts]:
                request.wait()
            return [
                np.concatenate([np.array(r.get_tensor(o).data) for r in self._requests[:parts]])
                for o in self._outputs
            ]

    def close(self) -> None:
        self._requests = []

    @property
    def provider(self) -> str:
        return getattr(self, "_provider", "OpenVINO CPU")


@register
class OpenVinoStreamsRuntime(OpenVinoRuntime):
    """One single-threaded stream per thread; each batch is split across the streams."""

    name: ClassVar[str] = "openvino-streams"

    @property
    def streams(self) -> int:
        return max(1, self.settings.threads)
