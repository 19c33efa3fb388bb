"""OpenVINO (when installed): reads ONNX directly; computes in FP32, BF16 or (with AVX512-FP16) FP16
by hint; runs QDQ INT8.

Two registered runtimes:

- ``openvino``: one stream using every thread (intra-op parallel): best batch-1 latency.
- ``openvino-streams``: one stream per thread, a batch split across them (data parallel). On
  small per-op work (short sentences) it skips the cross-core synchronization of every op,
  which measured faster at batch 32 on 2 cores; batch-1 latency is worse. Measured like
  every other runtime; the objective decides.
- ``openvino-static`` / ``openvino-streams-static``: the same, plus one static-shape program
  per input shape that recurs (see ``StaticPrograms``). With every dimension known the plugin
  fuses the elementwise ops into snippets and plans memory once: minilm INT8 on AMX measured
  1.16x faster per call at 16 x 128 tokens and 1.09x at 16 x 16 (one core, PERF_COUNT). A
  program costs ~0.4 s to compile and ~85 MB (its own copy of the weights), so only shapes
  that recur get one, at most ``MAX_STATIC_PROGRAMS``; every other shape runs on the dynamic
  program. The compile happens in the call that asks for it (``prepare`` does it ahead for
  shapes known to come, as the timing batches are).

``kernels`` reads the executed graph (``get_runtime_model``): the primitive each compute node
ran with (``brgemm_avx512_bf16``, ``jit_avx512_amx_bf16``, ``ref_any_f32``, ...), counted.
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import re
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import numpy as np

from inferno.errors import RuntimeUnavailableError
from inferno.hardware import cpu_info
from inferno.runtimes.base import Artifact, Feeds, Runtime, device_of, register

log = logging.getLogger(__name__)

PRECISION_HINT = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}

STATIC_AFTER = 3
"""Uses of one input shape before it gets its own static program (a call split over streams
uses each part's shape once): a shape that does not recur (a warm-up sample's, one
sentence's exact length) costs no compile."""
MAX_STATIC_PROGRAMS = 8
"""Static programs per runtime (~85 MB each for minilm). None is ever dropped: with a churn of
shapes, dropping and recompiling would stall calls again and again; once the slots are
taken, further shapes run on the dynamic program, as fast as before."""


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

    static_shapes: ClassVar[bool] = False
    """Compile a static-shape program per recurring input shape (``StaticPrograms``)."""

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
            model = core.read_model(str(artifact.onnx_path))
            compiled = core.compile_model(model, device, config)
        except RuntimeError as exc:
            raise RuntimeUnavailableError(
                f"openvino cannot compile {artifact.onnx_path.name}: {openvino_reason(exc)}"
            ) from exc
        check_precision(compiled, config["INFERENCE_PRECISION_HINT"])
        self._compiled: Any = compiled
        self._kernels: str | None = None
        # Streams split a batch along axis 0: only where every tensor has its rows there.
        self._splittable = self.streams > 1 and artifact.options.batch_first
        self._dynamic = Program(compiled, self.streams)
        self._static = StaticPrograms(core, model, device, config, self.streams) if self.static_shapes else None
        self._lock = threading.Lock()  # infer requests are not shareable between callers
        self._inputs = {p.get_any_name() for p in compiled.inputs}
        self._provider = f"OpenVINO {device} ({config['INFERENCE_PRECISION_HINT']}"
        self._provider += f", {self.streams} streams" if self.streams > 1 else ""
        self._provider += ", static shapes)" if self.static_shapes else ")"
        if "DYNAMIC_QUANTIZATION_GROUP_SIZE" in config:
            self._provider += f" dynamic-quantization group {config['DYNAMIC_QUANTIZATION_GROUP_SIZE']}"

    def run(self, feeds: Feeds) -> list[np.ndarray]:
        parts = self._parts(self._known(feeds))
        with self._lock:
            if len(parts) == 1:
                program = self._program(parts[0])
                program.requests[0].infer(parts[0])
                return program.results(0)
            started = []
            for i, part in enumerate(parts):
                program = self._program(part)
                program.requests[i].start_async(part)
                started.append((program, i))
            for program, i in started:
                program.requests[i].wait()
            results = [program.results(i) for program, i in started]
            return [np.concatenate(pieces) for pieces in zip(*results, strict=True)]

    def prepare(self, calls: Sequence[Feeds]) -> None:
        """Compile the static programs these calls will use now, not during the first of them
        (the static runtimes; a no-op on the others)."""
        if self._static is None:
            return
        with self._lock:
            for feeds in calls:
                for part in self._parts(self._known(feeds)):
                    self._static.compile(shape_key(part))

    def _known(self, feeds: Feeds) -> Feeds:
        return {k: v for k, v in feeds.items() if k in self._inputs}

    def _parts(self, feeds: Feeds) -> list[Feeds]:
        """The feeds each stream runs: the batch split along axis 0 where it can be."""
        batch = len(next(iter(feeds.values()))) if self._splittable else 1
        parts = min(self.streams, batch)
        if parts <= 1:
            return [feeds]
        bounds = np.linspace(0, batch, parts + 1).astype(int)
        return [{k: v[lo:hi] for k, v in feeds.items()} for lo, hi in itertools.pairwise(bounds)]

    def _program(self, feeds: Feeds) -> Program:
        if self._static is None:
            return self._dynamic
        return self._static.get(feeds) or self._dynamic

    def close(self) -> None:
        # the summary is read on demand (16 ms on minilm): closing must not pay for it; a
        # complete summary read before closing is kept
        self._compiled = None
        self._dynamic = None  # type: ignore[assignment]
        self._static = None

    @property
    def provider(self) -> str:
        return getattr(self, "_provider", "OpenVINO CPU")

    @property
    def static_programs(self) -> int:
        """Static-shape programs compiled and kept now (0 on the dynamic-only runtimes)."""
        static = getattr(self, "_static", None)
        return 0 if static is None else len(static)

    @property
    def kernels(self) -> str | None:
        """The primitives the executed graph's compute nodes ran with (see ``kernel_summary``),
        read once all of them have run."""
        if getattr(self, "_kernels", None) is not None or getattr(self, "_compiled", None) is None:
            return getattr(self, "_kernels", None)
        static: StaticPrograms | None = getattr(self, "_static", None)
        latest = static.latest() if static is not None else None
        nodes = executed_nodes(latest.compiled if latest is not None else self._compiled)
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


@register
class OpenVinoStaticRuntime(OpenVinoRuntime):
    """``openvino`` with a static-shape program per recurring input shape."""

    name: ClassVar[str] = "openvino-static"
    static_shapes: ClassVar[bool] = True


@register
class OpenVinoStreamsStaticRuntime(OpenVinoStreamsRuntime):
    """``openvino-streams`` with a static-shape program per recurring input shape."""

    name: ClassVar[str] = "openvino-streams-static"
    static_shapes: ClassVar[bool] = True


class Program:
    """One compiled model and an infer request per stream."""

    def __init__(self, compiled: Any, streams: int) -> None:
        self.compiled = compiled
        self.requests = [compiled.create_infer_request() for _ in range(streams)]

    def results(self, request: int) -> list[np.ndarray]:
        """Copies of request ``request``'s outputs (its buffers are reused by the next call)."""
        infer = self.requests[request]
        return [np.array(infer.get_output_tensor(i).data) for i in range(len(self.compiled.outputs))]


ShapeKey = tuple[tuple[str, tuple[int, ...]], ...]


def shape_key(feeds: Feeds) -> ShapeKey:
    return tuple(sorted((name, tuple(int(d) for d in a.shape)) for name, a in feeds.items()))


class StaticPrograms:
    """Static-shape programs, compiled on a shape's ``STATIC_AFTER``-th call (or ahead, by
    ``prepare``), at most ``MAX_STATIC_PROGRAMS``. A shape that fails to compile statically
    (a graph whose reshape the plugin refuses) stays on the dynamic program. Not thread-safe:
    the runtime calls it under its lock."""

    def __init__(self, core: Any, model: Any, device: str, config: dict[str, Any], streams: int) -> None:
        self._core, self._model, self._device, self._config, self._streams = core, model, device, config, streams
        self._programs: OrderedDict[ShapeKey, Program | None] = OrderedDict()
        self._seen: Counter[ShapeKey] = Counter()

    def __len__(self) -> int:
        """Static programs compiled (a shape the plugin refused takes a slot, with no program)."""
        return sum(p is not None for p in self._programs.values())

    def latest(self) -> Program | None:
        """The static program used last (what ``kernels`` describes), None before any."""
        return next((p for p in reversed(self._programs.values()) if p is not None), None)

    def get(self, feeds: Feeds) -> Program | None:
        """The static program for these feeds' shapes; None while the dynamic one serves them."""
        key = shape_key(feeds)
        if key in self._programs:
            self._programs.move_to_end(key)
            return self._programs[key]
        if len(self._programs) >= MAX_STATIC_PROGRAMS:
            return None
        if len(self._seen) > 64 * MAX_STATIC_PROGRAMS:  # a stream of ever new shapes: forget, stay bounded
            self._seen.clear()
        self._seen[key] += 1
        return self.compile(key) if self._seen[key] >= STATIC_AFTER else None

    def compile(self, key: ShapeKey) -> Program | None:
        """The static program for ``key``, compiled now unless there is one or no slot is left."""
        if key not in self._programs and len(self._programs) < MAX_STATIC_PROGRAMS:
            self._seen.pop(key, None)
            self._programs[key] = self._compile(dict(key))
        return self._programs.get(key)

    def _compile(self, shapes: dict[str, tuple[int, ...]]) -> Program | None:
        model = self._model.clone()
        try:
            model.reshape({name: list(shape) for name, shape in shapes.items()})
            return Program(self._core.compile_model(model, self._device, self._config), self._streams)
        except RuntimeError as exc:
            log.warning("openvino: no static program for shapes %s (%s); the dynamic one serves them",
                        shapes, openvino_reason(exc))
            return None
