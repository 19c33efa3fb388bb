"""ONNX Runtime: CPU EP always; CUDA and TensorRT EPs when onnxruntime-gpu provides them.

No silent fallback, at two levels. The session must run on the provider asked for (ORT puts
it last in ``get_providers()`` when it cannot register it), and on a GPU provider no
compute node (MatMul, Conv, attention, normalization, ...) may be assigned to the CPU: ORT
does that per node, without a word, for ops its GPU kernels lack. Shape arithmetic on the
CPU is normal (ORT places it there on purpose) and only counted.

ORT does not report which kernel each node ran: ``kernels`` says what the CPU offers MLAS (its
GEMM/convolution library, which dispatches on the ISA) and names it as offered, not observed.
"""

from __future__ import annotations

import importlib.util
import logging
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from inferno.errors import RuntimeUnavailableError
from inferno.hardware import cpu_info
from inferno.runtimes.base import Artifact, Feeds, Runtime, device_of, register

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
PROVIDER_ALIASES = {"cpu": CPU, "cuda": CUDA, "tensorrt": TENSORRT}

COMPUTE_OPS = frozenset({
    "MatMul", "Gemm", "Conv", "ConvTranspose", "Einsum", "LSTM", "GRU", "RNN",
    "MatMulInteger", "QLinearMatMul", "QLinearConv", "ConvInteger", "DynamicQuantizeMatMul",
    "FusedMatMul", "FusedConv", "Attention", "MultiHeadAttention", "GroupQueryAttention",
    "Softmax", "LayerNormalization", "SkipLayerNormalization", "EmbedLayerNormalization",
    "SimplifiedLayerNormalization", "BiasGelu", "FastGelu", "Gelu", "BatchNormalization",
    "MaxPool", "AveragePool", "GlobalAveragePool",
})
"""Ops whose work matters: one of these on the CPU behind a GPU provider is a fallback."""

MLAS_ISA = ("amx_int8", "avx512_vnni", "avx_vnni", "avx512f", "avx2")
"""CPU features MLAS dispatches its kernels on (INT8: AMX, VNNI; FP32: AVX-512, AVX2), best first."""

TRT_CACHE_DIR = "trt_cache"
"""Folder (inside ``RuntimeOptions.cache_dir``) for TensorRT engines and timing caches."""
DEFAULT_MAX_BATCH = 256
DEFAULT_OPT_BATCH = 32
DEFAULT_MAX_SEQUENCE = 128
DEFAULT_TRT_WORKSPACE = 4 * 2**30
"""TensorRT's builder workspace when ``RuntimeOptions.trt_workspace_bytes`` is unset."""


@register
class OnnxRuntime(Runtime):
    """An ``InferenceSession`` with one requested execution provider and no silent fallback."""

    name: ClassVar[str] = "onnxruntime"

    @classmethod
    def available(cls) -> bool:
        return importlib.util.find_spec("onnxruntime") is not None

    @classmethod
    def supports(cls, artifact: Artifact, provider: str | None = None) -> bool:
        """CPU: FP32 and INT8 graphs as written (no BF16 mode; FP16 graphs run slower than FP32).

        CUDA: FP32 and FP16 graphs (INT8 is TensorRT's, and QDQ graphs fall back per node).
        TensorRT: the FP32 graph, in FP32 or with TensorRT's FP16 builder flag
        (``compute_precision="fp16"``); TensorRT picks FP16 kernels layer by layer.
        """
        if artifact.onnx_path is None:
            return False
        requested = cls._requested(provider)
        if requested == CUDA:
            return artifact.compute_precision == "fp32" and artifact.graph_precision in ("fp32", "fp16")
        if requested == TENSORRT:
            return artifact.graph_precision == "fp32" and artifact.compute_precision in ("fp32", "fp16")
        return artifact.compute_precision == "fp32" and artifact.graph_precision != "fp16"

    @staticmethod
    def _requested(provider: str | None) -> str:
        if provider is None:
            return CPU
        name, _, _ = provider.partition(":")
        return PROVIDER_ALIASES.get(name.lower(), name)

    def load(self, artifact: Artifact) -> None:
        import onnxruntime as ort

        requested = self._requested(self.settings.provider)
        if requested not in ort.get_available_providers():
            hint = " (install onnxruntime-gpu)" if device_of(requested) == "cuda" else ""
            raise RuntimeUnavailableError(
                f"onnxruntime: execution provider {requested!r} is not available here{hint}; "
                f"available: {', '.join(ort.get_available_providers())}"
            )
        if artifact.onnx_path is None:
            raise RuntimeUnavailableError("onnxruntime: the artifact has no ONNX graph")
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.settings.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        options.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
        providers = provider_chain(requested, self._device_id(), artifact)
        # ORT's own errors (an unreadable graph, an EP that fails to build) propagate as they
        # are: the callers already map them (a bad model file is the user's input, not ours).
        self._session = ort.InferenceSession(str(artifact.onnx_path), options, providers=providers)
        used = self._session.get_providers()[0]
        if used != requested:  # ORT falls back silently; inferno does not
            raise RuntimeUnavailableError(
                f"onnxruntime: asked for {requested} but the session runs on {used}"
            )
        self.placement = node_placement(self._session)
        if requested != CPU:
            check_no_cpu_fallback(requested, self.placement)
        self._provider = used
        self._output_names = [o.name for o in self._session.get_outputs()]
        self._input_names = {i.name for i in self._session.get_inputs()}

    def _device_id(self) -> int:
        _, _, index = (self.settings.provider or "").partition(":")
        return int(index) if index.isdigit() else 0

    def run(self, feeds: Feeds) -> list[np.ndarray]:
        feeds = {k: v for k, v in feeds.items() if k in self._input_names}
        return list(self._session.run(self._output_names, feeds))

    def close(self) -> None:
        self._session = None

    @property
    def provider(self) -> str:
        return getattr(self, "_provider", CPU)

    @property
    def kernels(self) -> str | None:
        """On the CPU, MLAS with the ISA the CPU offers it (ORT reports no kernel per node:
        offered, not observed); on a GPU provider, the nodes each provider was given."""
        placement: dict[str, Counter[str]] = getattr(self, "placement", {})
        if self.provider == CPU:
            return mlas_offer()
        return ", ".join(f"{ep} ×{sum(ops.values())} nodes" for ep, ops in placement.items()) or None


def mlas_offer() -> str:
    """``MLAS; CPU offers avx512_vnni, avx512f (not observed: ORT reports no kernels)``."""
    cpu = cpu_info()
    offered = [feature for feature in MLAS_ISA if cpu.has(feature)] or [f"{cpu.architecture} baseline"]
    return f"MLAS; CPU offers {', '.join(offered)} (not observed: ORT reports no kernels)"


def provider_chain(requested: str, device_id: int, artifact: Artifact) -> list[Any]:
    """The ``providers`` argument: the requested EP with its options, then its helpers.

    TensorRT takes the subgraphs it can build; CUDA gets what TensorRT cannot; the CPU EP is
    always registered (ORT requires it) and ``check_no_cpu_fallback`` polices what it gets.
    """
    if requested == CPU:
        return [CPU]
    cuda = (CUDA, {"device_id": device_id, "cudnn_conv_algo_search": "EXHAUSTIVE"})
    if requested == CUDA:
        return [cuda, CPU]
    if requested == TENSORRT:
        return [(TENSORRT, tensorrt_options(artifact, device_id)), cuda, CPU]
    return [requested, CPU]


def tensorrt_options(artifact: Artifact, device_id: int) -> dict[str, Any]:
    """TensorRT EP options: FP16 flag, engine cache, and one shape profile for dynamic inputs.

    Without explicit profiles TensorRT builds an engine for the first shape it sees and
    rebuilds (tens of seconds) whenever a new one falls outside it. The profile spans batch
    1..``max_batch_size`` (optimized for ``opt_batch_size``) and sequence 1..``max_sequence_length``.

    The engine cache goes under ``options.cache_dir`` (the model's version folder when
    served from a repository, so a restart does not rebuild). ORT names engines by the model
    *file name* and graph content, so the cache stays valid when the folder moves.
    """
    given = artifact.options
    options: dict[str, Any] = {
        "device_id": device_id,
        "trt_fp16_enable": artifact.compute_precision == "fp16",
        "trt_max_workspace_size": given.trt_workspace_bytes or DEFAULT_TRT_WORKSPACE,
    }
    if given.cache_dir:
        folder = given.cache_dir / TRT_CACHE_DIR
        folder.mkdir(parents=True, exist_ok=True)
        options |= {
            "trt_engine_cache_enable": True, "trt_engine_cache_path": str(folder),
            "trt_timing_cache_enable": True, "trt_timing_cache_path": str(folder),
        }
    if artifact.onnx_path is not None:
        options |= shape_profiles(
            dynamic_inputs(artifact.onnx_path),
            given.max_batch_size or DEFAULT_MAX_BATCH,
            given.opt_batch_size or DEFAULT_OPT_BATCH,
            given.max_sequence_length or DEFAULT_MAX_SEQUENCE,
        )
    return options


def dynamic_inputs(path: Path) -> dict[str, list[int | None]]:
    """Graph inputs with at least one symbolic dimension: name → dims (None where symbolic)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    found: dict[str, list[int | None]] = {}
    for value in graph.input:
        if value.name in initializers:
            continue
        dims: list[int | None] = [
            d.dim_value if d.HasField("dim_value") else None
            for d in value.type.tensor_type.shape.dim
        ]
        if None in dims:
            found[value.name] = dims
    return found


def shape_profiles(inputs: dict[str, list[int | None]], max_batch: int, opt_batch: int,
                   max_sequence: int) -> dict[str, str]:
    """``trt_profile_{min,opt,max}_shapes`` strings: axis 0 is the batch, other symbolic axes sequence."""
    if not inputs:
        return {}
    opt_batch = min(opt_batch, max_batch)

    def shapes(batch: int, sequence: int) -> str:
        parts = []
        for name, dims in inputs.items():
            concrete = [
                d if d is not None else (batch if axis == 0 else sequence)
                for axis, d in enumerate(dims)
            ]
            parts.append(f"{name}:{'x'.join(str(d) for d in concrete)}")
        return ",".join(parts)

    return {
        "trt_profile_min_shapes": shapes(1, 1),
        "trt_profile_opt_shapes": shapes(opt_batch, max_sequence),
        "trt_profile_max_shapes": shapes(max_batch, max_sequence),
    }


def node_placement(session: Any) -> dict[str, Counter[str]]:
    """Execution provider → op types of the nodes assigned to it (empty if ORT cannot say)."""
    try:
        subgraphs = session.get_provider_graph_assignment_info()
    except (AttributeError, RuntimeError):  # ORT older than the recording API
        return {}
    placement: dict[str, Counter[str]] = {}
    for subgraph in subgraphs:
        counts = placement.setdefault(subgraph.ep_name, Counter())
        counts.update(node.op_type for node in subgraph.get_nodes())
    return placement


def check_no_cpu_fallback(requested: str, placement: dict[str, Counter[str]]) -> None:
    """Raise when compute ops landed on the CPU behind a GPU provider.

    Raises:
        RuntimeUnavailableError: naming the ops and how many of each.
    """
    if not placement:
        log.warning("onnxruntime %s: this ORT cannot report node placement; CPU fallback not checked", requested)
        return
    on_cpu = placement.get(CPU, Counter())
    fallen = {op: n for op, n in on_cpu.items() if op in COMPUTE_OPS}
    if fallen:
        listed = ", ".join(f"{op} ×{n}" for op, n in sorted(fallen.items()))
        raise RuntimeUnavailableError(
            f"onnxruntime: asked for {requested} but compute nodes fell back to the CPU: {listed}"
        )
    gpu = {ep: sum(c.values()) for ep, c in placement.items() if ep != CPU}
    log.info("onnxruntime %s: nodes per provider %s; %d shape/glue nodes on the CPU",
             requested, gpu, sum(on_cpu.values()))
