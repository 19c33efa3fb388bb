"""Where a variant can be measured: a runtime and the provider it is asked for.

``accelerate --device cpu|cuda|all`` turns into a list of targets. CPU targets are every
installed runtime on its default provider (PyTorch eager is the baseline, not a candidate;
``torch.compile`` is left out on the CPU: minutes of compilation for what ONNX Runtime and
OpenVINO already do). CUDA targets are the GPU paths this machine really has: ONNX Runtime's
TensorRT and CUDA execution providers when onnxruntime-gpu offers them, PyTorch eager and
``torch.compile`` with CUDA graphs when torch sees a GPU.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from inferno.errors import ConfigError
from inferno.hardware import HardwareInfo
from inferno.runtimes import RUNTIMES
from inferno.runtimes.base import device_of

log = logging.getLogger(__name__)

BASELINE_RUNTIME = "torch"
CPU_EXCLUDED = frozenset({BASELINE_RUNTIME, "torch-compile"})
GPU_TARGETS: tuple[tuple[str, str, str], ...] = (
    # (runtime, provider, what must be present)
    ("onnxruntime", "tensorrt", "TensorrtExecutionProvider"),
    ("onnxruntime", "cuda", "CUDAExecutionProvider"),
    ("torch-compile", "cuda", "torch.cuda"),
    ("torch", "cuda", "torch.cuda"),
)
DEVICES = ("cpu", "cuda", "all")


@dataclass(frozen=True)
class Target:
    runtime: str
    provider: str | None = None
    """``RuntimeSettings.provider``: None is the runtime's CPU default."""

    @property
    def device(self) -> str:
        return device_of(self.provider)

    @property
    def label(self) -> str:
        """``onnxruntime``, ``onnxruntime:tensorrt``, ``torch:cuda``: unique per target."""
        return self.runtime if self.provider is None else f"{self.runtime}:{self.provider}"


@functools.cache
def torch_sees_cuda() -> bool:
    """True when torch is installed and sees a CUDA GPU (imports torch only if installed)."""
    if importlib.util.find_spec("torch") is None:
        return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # a broken CUDA install must not break accelerate on the CPU
        log.debug("torch.cuda probe failed", exc_info=True)
        return False


def _present(requirement: str, hardware: HardwareInfo) -> bool:
    if requirement == "torch.cuda":
        return torch_sees_cuda()
    return requirement in hardware.ort_providers


def gpu_targets(hardware: HardwareInfo, wanted: set[str] | None = None) -> list[Target]:
    """The GPU targets usable here (of the runtimes in ``wanted``, or all), in preference order."""
    return [
        Target(name, provider) for name, provider, need in GPU_TARGETS
        if (wanted is None or name in wanted) and name in RUNTIMES and RUNTIMES[name].available()
        and _present(need, hardware)
    ]


def select_targets(device: str, runtimes: Sequence[str] | None,
                   hardware: HardwareInfo) -> tuple[list[Target], list[str]]:
    """The targets for ``--device`` and ``--runtimes``, and notes on what was left out.

    Raises:
        ConfigError: an unknown device or runtime, or ``cuda`` asked for where there is none.
    """
    if device not in DEVICES:
        raise ConfigError(f"--device {device!r}: expected one of {', '.join(DEVICES)}")
    unknown = [n for n in runtimes or () if n not in RUNTIMES]
    if unknown:
        raise ConfigError(f"unknown runtime(s) {unknown}; expected some of {sorted(RUNTIMES)}")
    wanted = set(runtimes) if runtimes else None
    notes: list[str] = []
    targets: list[Target] = []
    if device in ("cpu", "all"):
        targets += [
            Target(name) for name, cls in RUNTIMES.items()
            if name not in CPU_EXCLUDED and (wanted is None or name in wanted) and cls.available()
        ]
    if device in ("cuda", "all"):
        gpu = gpu_targets(hardware, wanted)
        missing = [f"{name}:{provider} (needs {need})" for name, provider, need in GPU_TARGETS
                   if (wanted is None or name in wanted) and Target(name, provider) not in gpu]
        if not gpu and device == "cuda":
            raise ConfigError(
                "--device cuda: no GPU runtime is usable here "
                f"(GPUs found: {len(hardware.gpus)}; tried {', '.join(missing)}); "
                "`inferno hardware` shows what this machine has"
            )
        if not gpu:
            notes.append("no CUDA GPU runtime found: measured on the CPU only")
        elif missing:
            notes.append(f"GPU targets not available here: {', '.join(missing)}")
        targets += gpu
    if not targets:
        raise ConfigError(f"no runtime to measure on for --device {device} --runtimes {','.join(runtimes or ())}")
    return targets, notes
