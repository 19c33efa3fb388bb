"""Fakes and helpers shared by the pass tests: hardware descriptions, contexts, sessions."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from inferno.hardware import CPU_FEATURES, CpuInfo, GpuInfo, HardwareInfo
from inferno.passes import PassContext

Feeds = dict[str, np.ndarray]


def fake_hardware(
    *,
    cpu_features: Sequence[str] = (),
    gpus: Sequence[GpuInfo] = (),
    providers: Sequence[str] = ("CPUExecutionProvider",),
) -> HardwareInfo:
    """A machine description with exactly the given CPU features, GPUs and ORT providers."""
    unknown = set(cpu_features) - set(CPU_FEATURES)
    if unknown:
        raise ValueError(f"unknown CPU features {sorted(unknown)}")
    cpu = CpuInfo(
        model="fake",
        architecture="x86_64",
        physical_cores=2,
        logical_cores=2,
        usable_cores=2,
        features={name: name in cpu_features for name in CPU_FEATURES},
    )
    return HardwareInfo(cpu=cpu, memory_gb=8.0, gpus=tuple(gpus), ort_providers=tuple(providers))


def gpu(compute_capability: str) -> GpuInfo:
    """A fake CUDA GPU of the given compute capability."""
    return GpuInfo(index=0, name="fake", memory_mb=16000, compute_capability=compute_capability)


def context(
    calibration: Sequence[Feeds] = (),
    model_type: str | None = None,
    attributes: dict[str, int] | None = None,
) -> PassContext:
    """A context on a plain 2-core CPU with no BF16 and no GPU."""
    return PassContext(
        hardware=fake_hardware(),
        calibration=tuple(calibration),
        model_type=model_type,
        attributes=attributes or {},
        threads=2,
    )


def run(path: Path, feeds: Sequence[Feeds]) -> list[list[np.ndarray]]:
    """Every output of the graph at ``path`` for each feed, on ORT's CPU EP."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return [session.run(None, feed) for feed in feeds]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two arrays, flattened."""
    a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a64 @ b64 / (np.linalg.norm(a64) * np.linalg.norm(b64)))


def corrupt_model(path: Path) -> Path:
    """A file named like a model that is not one."""
    path.write_bytes(b"this is not an ONNX model \x00\x01\x02" * 8)
    return path
