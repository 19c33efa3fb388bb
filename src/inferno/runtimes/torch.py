"""PyTorch eager: the source module as the user would run it — the baseline of every speed-up."""

from __future__ import annotations

import contextlib
import importlib.util
from typing import Any, ClassVar

import numpy as np

from inferno.errors import MissingExtraError, RuntimeUnavailableError
from inferno.runtimes.base import Artifact, Feeds, Runtime, register


@register
class TorchEagerRuntime(Runtime):
    name: ClassVar[str] = "torch"

    @classmethod
    def available(cls) -> bool:
        return importlib.util.find_spec("torch") is not None

    @classmethod
    def supports(cls, artifact: Artifact) -> bool:
        # Only the unmodified source module: ONNX rewrites do not exist in torch.
        return artifact.torch_factory is not None and artifact.graph_precision == "fp32" and (
            artifact.compute_precision in ("fp32", "bf16")
        )

    def load(self, artifact: Artifact) -> None:
        try:
            import torch
        except ImportError as exc:
            raise MissingExtraError("torch", "torch", "the PyTorch eager runtime") from exc
        if artifact.torch_factory is None:
            raise RuntimeUnavailableError("torch: this model has no PyTorch source module")
        device = (self.settings.provider or "cpu").lower()
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeUnavailableError("torch: CUDA was requested but torch sees no GPU")
        torch.set_num_threads(self.settings.threads)
        self._torch = torch
        self._device = device
        self._module = artifact.torch_factory().eval().to(device)
        self._names = artifact.input_names
        self._bf16 = artifact.compute_precision == "bf16"

    def _autocast(self) -> Any:
        if not self._bf16:
            return contextlib.nullcontext()
        return self._torch.autocast(self._device.split(":")[0], dtype=self._torch.bfloat16)

    def run(self, feeds: Feeds) -> list[np.ndarray]:
        torch = self._torch
        args = [torch.from_numpy(np.ascontiguousarray(feeds[n])).to(self._device) for n in self._names]
        with torch.inference_mode(), self._autocast():
            out = self._module(*args)
        outputs = out if isinstance(out, (tuple, list)) else (out,)
        return [o.float().cpu().numpy() for o in outputs]

    def close(self) -> None:
        self._module = None

    @property
    def provider(self) -> str:
        return f"torch {getattr(self, '_device', 'cpu')}"
