"""What this machine has for inference: CPU ISA, memory, GPUs, ONNX Runtime providers, OpenVINO.

Probes never raise: a probe that cannot answer leaves its field empty. Results are cached
for the life of the process (``detect``).
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# ISA features that change which kernels inference runtimes pick, by /proc/cpuinfo flag.
CPU_FEATURES: dict[str, tuple[str, ...]] = {
    "avx2": ("avx2",),
    "fma": ("fma",),
    "avx512f": ("avx512f",),
    "avx512_vnni": ("avx512_vnni", "avx512vnni"),
    "avx_vnni": ("avx_vnni",),
    "avx512_bf16": ("avx512_bf16",),
    "avx512_fp16": ("avx512_fp16",),
    "amx_tile": ("amx_tile",),
    "amx_int8": ("amx_int8",),
    "amx_bf16": ("amx_bf16",),
    "amx_fp16": ("amx_fp16",),
}


@dataclass(frozen=True)
class CpuInfo:
    model: str
    architecture: str
    physical_cores: int
    logical_cores: int
    usable_cores: int
    """Cores this process may run on (affinity), the default thread count."""
    features: dict[str, bool]

    def has(self, feature: str) -> bool:
        return self.features.get(feature, False)

    @property
    def int8_accelerated(self) -> bool:
        """Dot-product INT8 instructions (VNNI or AMX) make INT8 GEMMs pay off."""
        return self.has("avx512_vnni") or self.has("avx_vnni") or self.has("amx_int8")

    @property
    def bf16_accelerated(self) -> bool:
        return self.has("avx512_bf16") or self.has("amx_bf16")

    @property
    def fp16_accelerated(self) -> bool:
        """Native FP16 arithmetic (AVX512-FP16; AMX-FP16 CPUs have it too): OpenVINO's f16 hint."""
        return self.has("avx512_fp16")


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    memory_mb: int
    compute_capability: str
    driver: str = ""
    power_limit_w: float | None = None
    """The enforced board power limit; None where the card does not report one."""
    uuid: str = ""


@dataclass(frozen=True)
class HardwareInfo:
    cpu: CpuInfo
    memory_gb: float
    gpus: tuple[GpuInfo, ...] = ()
    ort_providers: tuple[str, ...] = ()
    openvino_devices: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def has_cuda(self) -> bool:
        return bool(self.gpus) or "CUDAExecutionProvider" in self.ort_providers

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@functools.cache
def detect() -> HardwareInfo:
    """Probe the machine once per process."""
    notes: list[str] = []
    return HardwareInfo(
        cpu=cpu_info(),
        memory_gb=_memory_gb(),
        gpus=_gpus(notes),
        ort_providers=_ort_providers(),
        openvino_devices=_openvino_devices(notes),
        notes=tuple(notes),
    )


@functools.cache
def cpu_info() -> CpuInfo:
    """The CPU part of ``detect`` alone (milliseconds: no GPU or runtime probe), once per process."""
    return _cpu()


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def _cpu() -> CpuInfo:
    info = _read("/proc/cpuinfo")
    model, flags = platform.processor() or platform.machine(), set[str]()
    physical: set[tuple[str, str]] = set()
    phys_id = core_id = ""
    for line in info.splitlines():
        key, _, value = (s.strip() for s in line.partition(":"))
        if key == "model name":
            model = value
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
        elif key == "physical id":
            phys_id = value
        elif key == "core id":
            core_id = value
            physical.add((phys_id, core_id))
    logical = os.cpu_count() or 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else logical
    features = {name: any(f in flags for f in aliases) for name, aliases in CPU_FEATURES.items()}
    return CpuInfo(
        model=model,
        architecture=platform.machine(),
        physical_cores=len(physical) or logical,
        logical_cores=logical,
        usable_cores=usable,
        features=features,
    )


def _memory_gb() -> float:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024**2, 1)
    return 0.0


def _gpus(notes: list[str]) -> tuple[GpuInfo, ...]:
    """CUDA GPUs through NVML when present, else nvidia-smi; torch is not imported for this."""
    from inferno.hardware.nvml import NVML_NOT_INSTALLED, nvml

    pynvml, reason = nvml()
    if pynvml is None:
        if reason != NVML_NOT_INSTALLED:
            notes.append(f"NVML: {reason}")
        return _smi_gpus()
    try:
        driver = str(pynvml.nvmlSystemGetDriverVersion())
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle).total // 2**20
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            gpus.append(GpuInfo(i, str(name), int(mem), f"{major}.{minor}", driver,
                                _nvml_power_limit_w(pynvml, handle),
                                str(pynvml.nvmlDeviceGetUUID(handle))))
        return tuple(gpus)
    except Exception as exc:  # NVML raises its own error types
        notes.append(f"NVML: {exc}")
    return _smi_gpus()


def _nvml_power_limit_w(pynvml: Any, handle: Any) -> float | None:
    """Cards without power management answer NotSupported; the other fields still count."""
    try:
        return float(pynvml.nvmlDeviceGetEnforcedPowerLimit(handle)) / 1000  # mW
    except pynvml.NVMLError:
        return None


_SMI_FIELDS = "index,name,memory.total,compute_cap,driver_version,power.limit,uuid"


def _smi_gpus() -> tuple[GpuInfo, ...]:
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={_SMI_FIELDS}", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    gpus = []
    for row in out.strip().splitlines():
        cells = [c.strip() for c in row.split(",")]
        if len(cells) != 7:  # a name with a comma, or an nvidia-smi that answers differently
            continue
        index, name, mem, cc, driver, limit, uuid = cells
        try:
            gpus.append(GpuInfo(int(index), name, int(float(mem)), cc, driver, _float(limit), uuid))
        except ValueError:
            continue
    return tuple(gpus)


def _float(cell: str) -> float | None:
    """nvidia-smi writes ``[N/A]`` or ``[Not Supported]`` where a card has no value."""
    try:
        return float(cell)
    except ValueError:
        return None


def _ort_providers() -> tuple[str, ...]:
    try:
        import onnxruntime as ort
    except ImportError:
        return ()
    return tuple(ort.get_available_providers())


def _openvino_devices(notes: list[str]) -> tuple[str, ...]:
    try:
        import openvino as ov
    except ImportError:
        return ()
    try:
        return tuple(ov.Core().available_devices)
    except Exception as exc:  # a broken plugin must not break `inferno hardware`
        notes.append(f"OpenVINO: {exc}")
        return ()
