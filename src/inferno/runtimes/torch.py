"""PyTorch eager: the source module as the user would run it — the baseline of every speed-up.

CPU in FP32 or BF16 (autocast); CUDA in FP32, FP16 or BF16 (weights cast). A CUDA device torch
cannot see is an error, never a quiet run on the CPU.
"""

from __future__ import annotations

import importlib.util
from typing import Any, ClassVar

import numpy as np

from inferno.runtimes import _torch_common as common
from inferno.runtimes.base import Artifact, Feeds, Runtime, register


class TorchRuntime(Runtime):
    """What every PyTorch runtime shares: torch installed, and the source module at a
    precision the device runs (``_torch_common.supports_artifact``)."""

    @classmethod
    def available(cls) -> bool:
        return importlib.util.find_spec("torch") is not None

    @classmethod
    def supports(cls, artifact: Artifact, provider: str | None = None) -> bool:
        return common.supports_artifact(artifact, provider)


@register
class TorchEagerRuntime(TorchRuntime):
    """``module(*inputs)`` under ``inference_mode`` on the requested device and precision."""

    name: ClassVar[str] = "torch"

    def load(self, artifact: Artifact) -> None:
        torch = common.import_torch("the PyTorch eager runtime")
        target = common.resolve_target(torch, self.settings.provider, artifact.compute_precision, self.name)
        torch.set_num_threads(self.settings.threads)
        self._torch: Any = torch
        self._target = target
        self._module: Any = common.load_module(torch, artifact, target, self.name)
        self._names = artifact.input_names

    def run(self, feeds: Feeds) -> list[np.ndarray]:
        # No shared buffers: pinned staging memory comes from torch's caching host allocator,
        # so concurrent calls from worker threads are safe.
        torch, target = self._torch, self._target
        with common.compute_context(torch, target):
            inputs = common.to_tensors(torch, common.select(feeds, self._names), self._names, target)
            outputs = common.flatten_outputs(self._module(*inputs))
            host = common.HostOutputs(torch, target)
            host.add(outputs)
        return host.numpy()

    def close(self) -> None:
        self._module = None

    @property
    def provider(self) -> str:
        target = getattr(self, "_target", None)
        return f"{self.name} {target.label if target is not None else 'cpu'}"
