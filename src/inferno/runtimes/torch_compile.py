"""PyTorch compiled: ``torch.compile`` per shape bucket and, on CUDA, one CUDA graph per bucket.

Why buckets: ``dynamic=False`` compiles kernels specialized to one shape (the fastest kind),
and a CUDA graph replays exactly one shape. Feeds are padded to a few bucket shapes
(``_buckets``): batch sizes in powers of two up to ``max_batch_size``, token sequences in
multiples of ``sequence_multiple``. Each bucket compiles once, and on CUDA is captured once,
lazily on the first call that needs it; later calls copy into the graph's static input
buffers and replay it: one launch instead of one per kernel, which is what small batches
on a fast GPU are bound by.

Options read (``Artifact.options``, see ``RuntimeOptions``):

- ``compile_mode``: ``torch.compile`` mode, default ``max-autotune-no-cudagraphs`` (the
  graphs are ours, per bucket; inductor's own would nest inside our capture).
- ``cuda_graphs``: capture CUDA graphs, default True on CUDA; there are none on the CPU.
- ``max_batch_size``: the largest batch bucket (default 256); larger batches run in chunks.
- ``sequence_inputs``: the token-sequence inputs ([batch, seq], padded with 0 on axis 1).
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from inferno.errors import ConfigError, DataMismatchError, RuntimeUnavailableError
from inferno.runtimes import _torch_common as common
from inferno.runtimes._buckets import (
    BucketKey,
    BucketPlanner,
    Piece,
    batch_buckets,
    sequence_axes,
    trim,
)
from inferno.runtimes.base import Artifact, Feeds, register
from inferno.runtimes.options import RuntimeOptions
from inferno.runtimes.torch import TorchRuntime

if TYPE_CHECKING:
    import torch

INDUCTOR_CUDAGRAPH_MODES = ("reduce-overhead", "max-autotune")
"""Modes in which inductor captures CUDA graphs itself: they cannot nest inside ours."""


@dataclass(frozen=True)
class CompileOptions:
    """The options this runtime reads, with its defaults filled in and checked against the model."""

    mode: str = "max-autotune-no-cudagraphs"
    cuda_graphs: bool = True
    max_batch_size: int = 256
    sequence_inputs: tuple[str, ...] = ()

    @classmethod
    def from_options(cls, options: RuntimeOptions, input_names: Sequence[str], cuda: bool) -> CompileOptions:
        """Raises ConfigError naming the option and its value."""
        mode = options.compile_mode or cls.mode
        graphs = options.cuda_graphs and cuda  # CUDA graphs exist on CUDA only; provider says which ran
        if graphs and mode in INDUCTOR_CUDAGRAPH_MODES:
            raise ConfigError(
                f"hint compile_mode {mode!r} captures CUDA graphs inside inductor, which cannot nest in "
                "the per-bucket graphs of cuda_graphs=true: use 'max-autotune-no-cudagraphs' or cuda_graphs=false"
            )
        unknown = [n for n in options.sequence_inputs if n not in input_names]
        if unknown:
            raise ConfigError(f"hint sequence_inputs: {unknown} are not inputs of the model ({list(input_names)})")
        return cls(mode, graphs, options.max_batch_size or cls.max_batch_size, options.sequence_inputs)


@dataclass
class _Captured:
    graph: Any
    inputs: list[torch.Tensor]
    outputs: list[torch.Tensor]


class _CudaGraphs:
    """One captured CUDA graph per bucket, replayed with static input and output buffers. CUDA only.

    All graphs share one memory pool: a graph's intermediates may then reuse memory another
    graph's outputs live in, which is safe only because a call copies the outputs out before
    any other replay and the runtime's lock allows no concurrent replay.
    """

    WARMUP_RUNS = 3
    """Runs on a side stream before capture, as the PyTorch docs prescribe: the first compiles
    and autotunes, the others settle lazy initialization (cuBLAS workspaces, Triton loads)."""

    def __init__(self, torch: Any, device: torch.device, fn: Any) -> None:
        self._torch = torch
        self._fn = fn
        self._pool = torch.cuda.graph_pool_handle()
        self._stream = torch.cuda.Stream(device=device)
        self._device = device
        self._graphs: dict[BucketKey, _Captured] = {}

    def __contains__(self, key: BucketKey) -> bool:
        return key in self._graphs

    def keys(self) -> tuple[BucketKey, ...]:
        return tuple(self._graphs)

    def capture(self, key: BucketKey, inputs: Sequence[torch.Tensor]) -> None:
        """Warm up on a side stream, then capture ``fn`` on ``inputs`` (copied into static buffers)."""
        torch = self._torch
        statics = [t.clone() for t in inputs]
        current = torch.cuda.current_stream(self._device)
        self._stream.wait_stream(current)
        with torch.cuda.stream(self._stream):
            for _ in range(self.WARMUP_RUNS):
                self._fn(*statics)
        current.wait_stream(self._stream)
        graph = torch.cuda.CUDAGraph()
        # thread_local: other threads of a server keep running their models during capture;
        # only this thread's unsafe calls would break it.
        with torch.cuda.graph(graph, pool=self._pool, stream=self._stream, capture_error_mode="thread_local"):
            outputs = common.flatten_outputs(self._fn(*statics))
        self._graphs[key] = _Captured(graph, statics, outputs)

    def replay(self, key: BucketKey, arrays: Sequence[np.ndarray] | None) -> list[torch.Tensor]:
        """Copy ``arrays`` (None: the capture's own inputs) into the static inputs and replay.

        The returned tensors are the static outputs: the next replay overwrites them.
        """
        captured = self._graphs[key]
        if arrays is not None:
            common.copy_into(self._torch, captured.inputs, arrays)
        captured.graph.replay()
        return captured.outputs


@register
class TorchCompileRuntime(TorchRuntime):
    """``torch.compile`` with static shapes per bucket; CUDA graphs per bucket on CUDA."""

    name: ClassVar[str] = "torch-compile"
    # Every new sequence length is a compile (and a capture): a few lengths are cheaper.
    sequence_multiple: ClassVar[int] = 32
    SEQUENCE_BUCKETS: ClassVar[int] = 64
    """Sequence buckets budgeted for in dynamo's recompile limit (64 × 32 = 2048 tokens)."""
    RECOMPILE_SLACK: ClassVar[int] = 8
    """Recompiles allowed beyond the buckets: guards on other state than shapes."""

    def load(self, artifact: Artifact) -> None:
        torch = common.import_torch("the torch.compile runtime")
        target = common.resolve_target(torch, self.settings.provider, artifact.compute_precision, self.name)
        options = CompileOptions.from_options(artifact.options, artifact.input_names, target.is_cuda)
        torch.set_num_threads(self.settings.threads)
        self._torch: Any = torch
        self._target = target
        self._options = options
        self._names = artifact.input_names
        self._module: Any = common.load_module(torch, artifact, target, self.name)
        buckets = len(batch_buckets(options.max_batch_size))
        # Dynamo recompiles once per bucket (dynamic=False) and by default gives up after 8,
        # running the frame eagerly from then on. The limit is raised for this compiled module
        # only (isolate_recompiles: its own count, not shared with other modules of the class).
        self._recompile_limit = buckets * (self.SEQUENCE_BUCKETS if options.sequence_inputs else 1) + self.RECOMPILE_SLACK
        self._compiled: Any = _compile(torch, self._module, options.mode, self._recompile_limit)
        self._planner = BucketPlanner(options.max_batch_size, options.sequence_inputs, self.sequence_multiple)
        self._lock = threading.Lock()
        self._compiled_keys: dict[BucketKey, None] = {}
        self._sequence_axes: list[tuple[int, ...]] | None = None
        self._graphs: _CudaGraphs | None = None
        if options.cuda_graphs:
            with common.compute_context(torch, target):
                self._graphs = _CudaGraphs(torch, target.device, self._compiled)

    @contextlib.contextmanager
    def _new_bucket(self) -> Iterator[None]:
        """Scope of a call that compiles a new bucket.

        ``accumulated_recompile_limit`` caps compiles of one code object across every compiled
        region of the process: a module class compiled by several runtimes (one per precision)
        would share it. Raised by this runtime's own limit, in this thread (dynamo's config
        patches are thread-local), for this call only.
        """
        config = self._torch._dynamo.config
        name = _config_name(config, "accumulated_recompile_limit", "accumulated_cache_size_limit")
        if name is None:
            yield
            return
        with config.patch(**{name: getattr(config, name) + self._recompile_limit}):
            yield

    def run(self, feeds: Feeds) -> list[np.ndarray]:
        torch, target = self._torch, self._target
        feeds = common.select(feeds, self._names)
        with self._lock, common.compute_context(torch, target):  # static buffers: one call at a time
            try:
                pieces, length = self._planner.plan(feeds)
            except ValueError as exc:
                raise DataMismatchError(str(exc)) from None
            host = common.HostOutputs(torch, target)
            handles = []
            for piece in pieces:
                outputs = self._execute(piece)
                axes = self._output_sequence_axes(piece, length, len(outputs))
                handles.append(host.add([trim(o, piece.rows, a, length) for o, a in zip(outputs, axes, strict=True)]))
            arrays = host.numpy()
        per_piece = [[arrays[h] for h in hs] for hs in handles]
        if len(per_piece) == 1:
            return per_piece[0]
        return [np.concatenate(parts) for parts in zip(*per_piece, strict=True)]

    def _execute(self, piece: Piece) -> list[torch.Tensor]:
        """The bucket's outputs on the device (a graph's static outputs when graphs are on)."""
        key = piece.key
        graphs = self._graphs
        if graphs is not None and key in graphs:
            return graphs.replay(key, list(piece.feeds.values()))
        inputs = common.to_tensors(self._torch, piece.feeds, self._names, self._target)
        if graphs is not None:
            with self._new_bucket():
                graphs.capture(key, inputs)
            self._compiled_keys[key] = None
            return graphs.replay(key, None)
        if key in self._compiled_keys:
            return common.flatten_outputs(self._compiled(*inputs))
        with self._new_bucket():
            outputs = common.flatten_outputs(self._compiled(*inputs))
        self._compiled_keys[key] = None
        return outputs

    def _output_sequence_axes(self, piece: Piece, length: int | None, count: int) -> list[tuple[int, ...]]:
        """Per output, the axes to trim back to ``length`` (token-level outputs of a text model)."""
        padded = piece.key.sequence
        if length is None or padded is None or padded == length:
            return [()] * count
        if self._sequence_axes is None:
            self._sequence_axes = self._probe_sequence_axes(piece, length, padded)
        return self._sequence_axes

    def _probe_sequence_axes(self, piece: Piece, length: int, padded: int) -> list[tuple[int, ...]]:
        """Run the eager module on one row at the true and the padded length; compare shapes.

        Once per runtime: the output shapes alone cannot tell a token axis from a hidden axis
        that happens to have the padded length.
        """
        sequence = self._options.sequence_inputs
        row = {name: a[:1] for name, a in piece.feeds.items()}
        short = {name: trim(a, 1, (1,), length) if name in sequence else a for name, a in row.items()}
        shapes = []
        for feeds in (short, row):
            inputs = common.to_tensors(self._torch, feeds, self._names, self._target)
            shapes.append([tuple(o.shape) for o in common.flatten_outputs(self._module(*inputs))])
        try:
            return sequence_axes(shapes[0], shapes[1], length, padded)
        except ValueError as exc:
            raise RuntimeUnavailableError(
                f"{self.name}: sequence padding changes this model's outputs ({exc}); "
                "leave its inputs out of the 'sequence_inputs' hint"
            ) from None

    def close(self) -> None:
        self._graphs = None
        self._compiled = None
        self._module = None

    @property
    def captured_buckets(self) -> tuple[BucketKey, ...]:
        """The buckets with a captured CUDA graph, in capture order (empty without graphs)."""
        graphs = getattr(self, "_graphs", None)
        return graphs.keys() if graphs is not None else ()

    @property
    def compiled_buckets(self) -> tuple[BucketKey, ...]:
        """Every bucket the compiled module has run, in first-use order."""
        return tuple(getattr(self, "_compiled_keys", {}))

    @property
    def provider(self) -> str:
        target = getattr(self, "_target", None)
        label = f"{self.name} {target.label if target is not None else 'cpu'}"
        return f"{label}, CUDA graphs" if getattr(self, "_graphs", None) is not None else label


def _config_name(config: Any, *names: str) -> str | None:
    """The first of ``names`` this torch's dynamo config has (options were renamed across releases)."""
    return next((n for n in names if hasattr(config, n)), None)


def _compile(torch: Any, module: Any, mode: str, limit: int) -> Any:
    """``torch.compile`` with dynamo's recompile limit raised to ``limit`` buckets.

    torch 2.13 takes the limit per compiled module; older releases (2.11 is what the GPU
    machines have) only have the process-wide setting, which is raised, never lowered.
    """
    if "recompile_limit" in inspect.signature(torch.compile).parameters:
        return torch.compile(module, mode=mode, dynamic=False, recompile_limit=limit, isolate_recompiles=True)
    config = torch._dynamo.config
    name = _config_name(config, "recompile_limit", "cache_size_limit")
    if name is not None:
        setattr(config, name, max(getattr(config, name), limit))
    return torch.compile(module, mode=mode, dynamic=False)
