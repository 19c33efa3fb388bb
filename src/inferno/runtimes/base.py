"""The ``Runtime`` interface: load a model artifact, warm up, run feeds, close.

Runtimes register in ``RUNTIMES`` by name. Each says whether it can run here
(``available``) and whether it can run a given artifact (``supports``); nothing falls back
silently: the provider actually used is exposed by ``provider``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from inferno.runtimes.options import RuntimeOptions

Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class Artifact:
    """What a runtime loads: an ONNX file, or for the eager baseline a torch module factory."""

    onnx_path: Path | None
    input_names: tuple[str, ...]
    graph_precision: str = "fp32"
    """Precision the graph was rewritten to: ``fp32``, ``int8`` (activations too), ``int8w``
    (weights only, behind DequantizeLinear), ``mixed`` (INT8 with FP32 islands), ``fp16``."""
    compute_precision: str = "fp32"
    """Precision the runtime should compute in: ``bf16`` / ``fp16`` ask for BF16 / FP16 execution
    of an FP32 graph (OpenVINO's precision hint, TensorRT's FP16 builder flag, PyTorch weights
    cast to that dtype)."""
    torch_factory: Callable[[], Any] | None = None
    """The source PyTorch module, for runtimes that run it instead of the ONNX graph. Set only
    when the graph is the unmodified export (precision changes are the runtime's to make)."""
    options: RuntimeOptions = field(default_factory=RuntimeOptions)
    """Runtime knobs chosen by the recipe, ``accelerate`` and the plan runner (see ``RuntimeOptions``)."""


@dataclass(frozen=True)
class RuntimeSettings:
    threads: int = 1
    provider: str | None = None
    """Execution provider or device to use; None picks the runtime's CPU default. GPU values:
    ``cuda`` (or ``cuda:N``) for every runtime that has a GPU path, ``tensorrt`` for ONNX Runtime."""


class Runtime(ABC):
    """One way of executing a model. Lifecycle: ``load`` → ``warmup`` → ``run``* → ``close``."""

    name: ClassVar[str]
    sequence_multiple: ClassVar[int] = 1
    """Servers pad variable sequence lengths up to a multiple of this. Runtimes that re-plan
    the graph on every new input shape set it higher: a few fixed lengths then cost less
    than the exact ones."""

    def __init__(self, settings: RuntimeSettings) -> None:
        self.settings = settings

    @classmethod
    @abstractmethod
    def available(cls) -> bool:
        """Cheap check, called before anything else: is the package importable here?"""

    @classmethod
    @abstractmethod
    def supports(cls, artifact: Artifact, provider: str | None = None) -> bool:
        """Called before ``load``: can this runtime execute the artifact as requested, on
        ``provider`` (the value ``RuntimeSettings.provider`` will have)?"""

    @abstractmethod
    def load(self, artifact: Artifact) -> None:
        """Called once: build the session/compiled model.

        Raises:
            RuntimeUnavailableError: when the requested provider cannot be used.
        """

    def warmup(self, feeds: Feeds, runs: int = 3) -> None:
        """Called after ``load`` and before any timed ``run``."""
        for _ in range(runs):
            self.run(feeds)

    def prepare(self, calls: Sequence[Feeds]) -> None:  # noqa: B027  (optional hook)
        """Build ahead what these calls will need (a runtime that compiles per input shape),
        so that none of them pays for it; called before timing them. Most runtimes need nothing."""

    @abstractmethod
    def run(self, feeds: Feeds) -> list[np.ndarray]:
        """Execute once; return the outputs in signature order. Safe to call from a worker thread."""

    def close(self) -> None:  # noqa: B027  (optional hook: most runtimes free on GC)
        """Release the session; called once at the end."""

    @property
    def provider(self) -> str:
        """The execution provider or device actually in use."""
        return "CPU"

    @property
    def kernels(self) -> str | None:
        """Which ISA paths the compute ran on, read after the timed runs (before ``close``):
        kernels the runtime reports it executed, or where it cannot say, a statement that
        names itself as what the CPU offers. None: the runtime tells nothing."""
        return None


RUNTIMES: dict[str, type[Runtime]] = {}

R = TypeVar("R", bound=type[Runtime])


def register(cls: R) -> R:
    RUNTIMES[cls.name] = cls
    return cls


GPU_PROVIDERS = ("cuda", "tensorrt")
"""Provider values (lower case, device index dropped) that run on a CUDA GPU."""


def device_of(provider: str | None) -> str:
    """``cuda`` for a GPU provider value (``cuda``, ``cuda:1``, ``tensorrt``, ORT's full names), else ``cpu``."""
    if provider is None:
        return "cpu"
    name = provider.lower().split(":")[0].removesuffix("executionprovider")
    return "cuda" if name in GPU_PROVIDERS else "cpu"
