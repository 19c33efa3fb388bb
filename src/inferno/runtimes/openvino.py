"""OpenVINO (when installed): reads ONNX directly; computes in FP32, BF16 or (with AVX512-FP16) FP16
by hint; runs QDQ INT8.

Two registered runtimes:

- ``openvino``: one stream using every thread (intra-op parallel): best batch-1 latency.
- ``openvino-streams``: one stream per thread, a batch split across them (data parallel). On
  small per-op work (short sentences) it skips the cross-core synchronization of every op,
  which measured faster at batch 32 on 2 cores; batch-1 latency is worse. Measured like
  every other runtime; the objective decides.

``kernels`` reads the executed graph (``get_runtime_model``): the primitive each compute node
ran with (``brgemm_avx512_bf16``, ``jit_avx512_amx_bf16``, ``ref_any_f32``, ...), counted.
"""

from __future__ import annotations

import importlib.util
import re
import threading
from collections import Counter
from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np

from inferno.errors import RuntimeUnavailableError
from inferno.hardware import cpu_info
from inferno.runtimes.base import Artifact, Feeds, Runtime, device_of, register

PRECISION_HINT = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}


OPENVINO_NOISE = re.compile(r"^(Exception from src/|Check '.*' failed at src/)")
"""OpenVINO's messages open with source locations, one line per layer the error crossed."""


MATRIX_LAYERS = frozenset({
    "FullyConnected", "MatMul", "Convolution", "Deconvolution", "Subgraph", "ScaledDotProductAttention",
    "RNNSeq", "RNNCell",
})
"""CPU-plugin layer types that carry the arithmetic (``Subgraph``: fused snippets, attention among
them): always summarized, their primitives listed first."""
DATA_MOVEMENT_LAYERS = frozenset({
    "Input", "Output", "Const", "Reorder", "Reshape", "Transpose", "Concatenation", "Split", "Gather",
    "GatherND", "GatherElements", "ShapeOf", "Broadcast", "StridedSlice", "Convert", "Tile", "Pad",
    "Range", "ScatterUpdate", "ScatterNDUpdate", "ScatterElementsUpdate", "DepthToSpace",
    "SpaceToDepth", "ShuffleChannels", "Roll", "NonZero", "Select", "MemoryInput", "MemoryOutput",
})
"""Layer types that move or re-lay data (their primitive says nothing about the ISA of the compute)."""
SHAPE_PRECISIONS = frozenset({"i32", "i64"})
"""Eltwise/Reduce nodes in these run shape arithmetic, not the model's compute."""

Executed = tuple[str, str, str]
"""One node of the executed graph: (layer type, primitive type, runtime precision)."""


def kernel_counts(nodes: Iterable[Executed]) -> dict[str, Counter[str]]:
    """Primitive → the compute layer types that ran with it, counted; the groups with the most
    matrix-op nodes first, then by count. Data movement and shape arithmetic are left out."""
    groups: dict[str, Counter[str]] = {}
    for layer, primitive, precision in nodes:
        if layer in MATRIX_LAYERS or (layer not in DATA_MOVEMENT_LAYERS and precision not in SHAPE_PRECISIONS):
            groups.setdefault(primitive, Counter())[layer] += 1

    def order(item: tuple[str, Counter[str]]) -> tuple[int, int]:
        layers = item[1]
        return -sum(n for layer, n in layers.items() if layer in MATRIX_LAYERS), -sum(layers.values())

    return dict(sorted(groups.items(), key=order))


def kernel_summary(nodes: Iterable[Executed]) -> str | None:
    """``brgemm_avx512_bf16 ×36 (FullyConnected), jit_avx512_f32 ×44 (Eltwise, MVN, Reduce)``;
    None when no compute node is left. ``undef_*`` marks a node not run yet (dynamic shapes
    pick their kernel at the first inference)."""
    parts = [
        f"{primitive} ×{sum(layers.values())} ({', '.join(layer for layer, _ in layers.most_common())})"
        for primitive, layers in kernel_counts(nodes).items()
    ]
    return ", ".join(parts) or None


def executed_nodes(compiled: Any) -> list[Executed]:
    """(layer type, primitive, precision) of every node of a compiled model's executed graph."""
    def field(info: Any, key: str) -> str:
        return str(info[key].value) if key in info else ""

    return [
        (field(info, "layerType"), field(info, "primitiveType"), field(info, "runtimePrecision"))
        for info in (op.get_rt_info() for op in compiled.get_runtime_model().get_ordered_ops())
    ]


def fp16_compute_here() -> bool:
    """OpenVINO's CPU plugin computes in FP16 natively only with AVX512-FP16 (Sapphire Rapids
    and later); elsewhere it would silently take BF16 or FP32 for an ``f16`` hint."""
    return cpu_info().fp16_accelerated


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
        # a CUDA machine it is a CPU runtime only. FP16 compute only where the CPU has AVX512-FP16.
        return (
            device_of(provider) == "cpu"
            and artifact.onnx_path is not None
            and artifact.graph_precision in ("fp32", "int8", "int8w", "mixed")
            and (artifact.compute_precision in ("fp32", "bf16")
                 or (artifact.compute_precision == "fp16" and fp16_compute_here()))
        )

    def _config(self, artifact: Artifact) -> dict[str, Any]:
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": PRECISION_HINT.get(artifact.compute_precision, "f32"),
            "INFERENCE_NUM_THREADS": self.settings.threads,
            "PERFORMANCE_HINT": "LATENCY" if self.streams == 1 else "THROUGHPUT",
            "NUM_STREAMS": self.streams,
        }
        group = artifact.options.dynamic_quantization_group_size
        if group is not None:
            # INT8 weights + activations quantized per group at run time: VNNI dot products.
            config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = group
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
        check_precision(compiled, config["INFERENCE_PRECISION_HINT"])
        self._compiled: Any = compiled
        self._kernels: str | None = None
        # Streams split a batch along axis 0: only where every tensor has its rows there.
        self._splittable = self.streams > 1 and artifact.options.batch_first
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
        # the summary is read on demand (16 ms on minilm): closing must not pay for it; a
        # complete summary read before closing is kept
        self._compiled = None
        self._requests = []

    @property
    def provider(self) -> str:
        return getattr(self, "_provider", "OpenVINO CPU")

    @property
    def kernels(self) -> str | None:
        """The primitives the executed graph's compute nodes ran with (see ``kernel_summary``),
        read once all of them have run."""
        if getattr(self, "_kernels", None) is not None or getattr(self, "_compiled", None) is None:
            return getattr(self, "_kernels", None)
        nodes = executed_nodes(self._compiled)
        summary = kernel_summary(nodes)
        if not any(primitive.startswith("undef") for _, primitive, _ in nodes):
            self._kernels = summary
        return summary


def check_precision(compiled: Any, asked: str) -> None:
    """The CPU plugin answers an inference precision it cannot run with another, silently
    (``f16`` becomes ``bf16`` or ``f32`` without AVX512-FP16).

    Raises:
        RuntimeUnavailableError: naming the precision asked for and the one compiled.
    """
    got = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    if got != asked:
        raise RuntimeUnavailableError(
            f"openvino: asked to compute in {asked} but the plugin compiled for {got} (not native on this CPU)"
        )


@register
class OpenVinoStreamsRuntime(OpenVinoRuntime):
    """One single-threaded stream per thread; each batch is split across the streams."""

    name: ClassVar[str] = "openvino-streams"

    @property
    def streams(self) -> int:
        return max(1, self.settings.threads)
