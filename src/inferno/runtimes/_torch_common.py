"""What the PyTorch runtimes share: device and precision choice, moving tensors in and out.

torch is imported lazily (importing inferno must not import it); the pure parts (which
device was asked for, which dtypes a precision means) take strings and are tested without it.

Precisions:

- CPU: ``fp32``, or ``bf16`` through autocast (weights stay FP32; matmuls run in BF16 where
  the CPU has the instructions).
- CUDA: ``fp32``, ``fp16``, ``bf16`` with the *weights* cast (``module.to(dtype)``): on a GPU
  that halves the weight traffic and lets every op, not only autocast's list, run in 16 bits.
  Floating inputs are cast to that dtype, integer inputs (token ids) are left alone, and
  floating outputs come back as FP32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from inferno.errors import DataMismatchError, MissingExtraError, RuntimeUnavailableError
from inferno.runtimes.base import Artifact, Feeds

if TYPE_CHECKING:
    import torch

PRECISIONS = {"cpu": ("fp32", "bf16"), "cuda": ("fp32", "fp16", "bf16")}
"""Compute precisions each device runs, by ``Artifact.compute_precision``."""

_DTYPE_NAMES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


@dataclass(frozen=True)
class DeviceRequest:
    """A device as asked for: ``kind`` is ``cpu`` or ``cuda``; ``index`` None means the current GPU."""

    kind: str
    index: int | None = None


def requested_device(provider: str | None) -> DeviceRequest:
    """Parse ``RuntimeSettings.provider`` for a torch runtime: None/``cpu``, ``cuda``, ``cuda:N``.

    Raises:
        RuntimeUnavailableError: any other value (``tensorrt`` is an ONNX Runtime provider).
    """
    if provider is None:
        return DeviceRequest("cpu")
    kind, _, index = provider.strip().lower().partition(":")
    if kind == "cpu" and not index:
        return DeviceRequest("cpu")
    if kind == "cuda" and (not index or index.isdigit()):
        return DeviceRequest("cuda", int(index) if index else None)
    raise RuntimeUnavailableError(
        f"torch: provider {provider!r} is not a torch device; expected cpu, cuda or cuda:N"
    )


def supports_artifact(artifact: Artifact, provider: str | None) -> bool:
    """The torch runtimes' ``supports``: the unmodified source module, at a precision the device runs."""
    try:
        device = requested_device(provider)
    except RuntimeUnavailableError:
        return False
    # Only the source module: ONNX rewrites (INT8, FP16 graphs) do not exist in torch.
    return (
        artifact.torch_factory is not None
        and artifact.graph_precision == "fp32"
        and artifact.compute_precision in PRECISIONS[device.kind]
    )


@dataclass(frozen=True)
class PrecisionPlan:
    """How a compute precision is realized: the weights' dtype and an optional autocast dtype."""

    weights: str
    autocast: str | None = None


def precision_plan(compute_precision: str, device_kind: str) -> PrecisionPlan:
    """Weights in ``compute_precision`` on CUDA; FP32 weights plus BF16 autocast for CPU ``bf16``.

    Raises:
        RuntimeUnavailableError: a precision the device does not run (``fp16`` on CPU).
    """
    allowed = PRECISIONS.get(device_kind, ())
    if compute_precision not in allowed:
        raise RuntimeUnavailableError(
            f"torch: compute precision {compute_precision!r} is not available on {device_kind}; "
            f"expected one of {', '.join(allowed)}"
        )
    if device_kind == "cpu" and compute_precision == "bf16":
        return PrecisionPlan("float32", autocast="bfloat16")
    return PrecisionPlan(_DTYPE_NAMES[compute_precision])


def import_torch(purpose: str) -> Any:
    """``import torch`` or the one-line error naming the extra that installs it."""
    try:
        import torch
    except ImportError as exc:
        raise MissingExtraError("torch", "torch", purpose) from exc
    return torch


@dataclass(frozen=True)
class Target:
    """The device and dtypes a runtime executes with, resolved against what torch sees."""

    device: torch.device
    weights: torch.dtype
    autocast: torch.dtype | None
    label: str
    """``cpu`` or ``cuda:N (GPU name)``: what ``provider`` reports."""

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"


def resolve_target(torch: Any, provider: str | None, compute_precision: str, runtime: str) -> Target:
    """The device to use, checked against what torch sees; never a fallback to the CPU.

    Raises:
        RuntimeUnavailableError: CUDA requested but torch has no (such) GPU, or a precision the
            device does not run.
    """
    request = requested_device(provider)
    plan = precision_plan(compute_precision, request.kind)
    weights = getattr(torch, plan.weights)
    autocast = getattr(torch, plan.autocast) if plan.autocast else None
    if request.kind == "cpu":
        return Target(torch.device("cpu"), weights, autocast, "cpu")
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise RuntimeUnavailableError(
            f"{runtime}: CUDA device {provider!r} was requested but torch {torch.__version__} ({build}) sees no CUDA GPU"
        )
    count = torch.cuda.device_count()
    index = torch.cuda.current_device() if request.index is None else request.index
    if index >= count:
        raise RuntimeUnavailableError(
            f"{runtime}: CUDA device {provider!r} was requested but torch sees {count} GPU(s) (cuda:0..cuda:{count - 1})"
        )
    device = torch.device("cuda", index)
    return Target(device, weights, autocast, f"{device} ({torch.cuda.get_device_name(device)})")


def load_module(torch: Any, artifact: Artifact, target: Target, runtime: str) -> Any:
    """The source module in eval mode, on the target device, floating weights in the target dtype."""
    if artifact.torch_factory is None:
        raise RuntimeUnavailableError(f"{runtime}: this model has no PyTorch source module")
    # Module.to(dtype) casts floating parameters and buffers only: integer buffers stay.
    return artifact.torch_factory().eval().to(device=target.device, dtype=target.weights)


@contextlib.contextmanager
def compute_context(torch: Any, target: Target) -> Iterator[None]:
    """inference_mode, the target GPU as current device, and autocast where the plan asks for it."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.inference_mode())
        if target.is_cuda:
            stack.enter_context(torch.cuda.device(target.device))
        if target.autocast is not None:
            stack.enter_context(torch.autocast(target.device.type, dtype=target.autocast))
        yield


def torch_dtype(torch: Any, dtype: np.dtype) -> torch.dtype:
    """The torch dtype of a numpy dtype."""
    return torch.from_numpy(np.empty(0, dtype)).dtype


def stage(torch: Any, array: np.ndarray) -> torch.Tensor:
    """A pinned host copy of ``array``, so the host→device copy can be asynchronous.

    Pinned blocks come from torch's caching host allocator, which does not hand a block out
    again before the copies recorded on it have finished: no buffer reuse to get wrong here.
    """
    pinned = torch.empty(array.shape, dtype=torch_dtype(torch, array.dtype), pin_memory=True)
    pinned.numpy()[...] = array
    return pinned


def select(feeds: Feeds, names: Sequence[str]) -> Feeds:
    """The model's inputs, in signature order; extra feeds are ignored (as ONNX Runtime does).

    Raises:
        DataMismatchError: an input is missing.
    """
    missing = [n for n in names if n not in feeds]
    if missing:
        raise DataMismatchError(f"inputs: expected {list(names)}, missing {missing} (got {sorted(feeds)})")
    return {n: feeds[n] for n in names}


def to_tensors(torch: Any, feeds: Feeds, names: Sequence[str], target: Target) -> list[torch.Tensor]:
    """The inputs in signature order on the target device; floating ones in the weights' dtype.

    On CUDA the copies are queued (pinned memory, ``non_blocking``) and the cast runs on the GPU.
    """
    tensors = []
    for name in names:
        array = feeds[name]
        if target.is_cuda:
            tensor = stage(torch, array).to(target.device, non_blocking=True)
        else:
            tensor = torch.from_numpy(np.ascontiguousarray(array))
        if tensor.is_floating_point() and tensor.dtype != target.weights:
            tensor = tensor.to(target.weights)
        tensors.append(tensor)
    return tensors


def copy_into(torch: Any, statics: Sequence[torch.Tensor], arrays: Sequence[np.ndarray]) -> None:
    """Queue copies of ``arrays`` into the device tensors ``statics`` (a captured graph's inputs).

    A dtype change (FP32 feed into an FP16 buffer) happens on the GPU during the copy.
    """
    for static, array in zip(statics, arrays, strict=True):
        static.copy_(stage(torch, array), non_blocking=True)


def flatten_outputs(out: Any) -> list[torch.Tensor]:
    """A module's result as a list of tensors: a tensor, a tuple/list, or a mapping (ModelOutput)."""
    if isinstance(out, Mapping):
        return list(out.values())
    if isinstance(out, (tuple, list)):
        return list(out)
    return [out]


class HostOutputs:
    """Device outputs on their way to numpy: queued copies to pinned memory, one sync at the end."""

    def __init__(self, torch: Any, target: Target) -> None:
        self._torch = torch
        self._target = target
        self._pending: list[torch.Tensor] = []

    def add(self, tensors: Sequence[torch.Tensor]) -> list[int]:
        """Queue the copy of each tensor (floating ones as FP32); returns their handles for ``numpy``."""
        handles = []
        for t in tensors:
            t = t.float() if t.is_floating_point() else t
            if self._target.is_cuda:
                host = self._torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
                host.copy_(t, non_blocking=True)
            else:
                host = t
            handles.append(len(self._pending))
            self._pending.append(host)
        return handles

    def numpy(self) -> list[np.ndarray]:
        """Wait for the queued copies, then own the results (no view of a pinned or reused buffer)."""
        if self._target.is_cuda:
            self._torch.cuda.current_stream(self._target.device).synchronize()
            return [host.numpy().copy() for host in self._pending]
        # CPU: outputs are fresh tensors the module just made; a view of one is already private.
        return [host.numpy() for host in self._pending]
