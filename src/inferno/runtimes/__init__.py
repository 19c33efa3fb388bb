"""Runtimes behind one interface (``Runtime``), registered in ``RUNTIMES`` by name."""

from inferno.runtimes import onnxruntime as _onnxruntime  # noqa: F401  (registers)
from inferno.runtimes import openvino as _openvino  # noqa: F401
from inferno.runtimes import torch as _torch  # noqa: F401
from inferno.runtimes import torch_compile as _torch_compile  # noqa: F401
from inferno.runtimes.base import RUNTIMES, Artifact, Feeds, Runtime, RuntimeSettings
from inferno.runtimes.options import RuntimeOptions

__all__ = ["RUNTIMES", "Artifact", "Feeds", "Runtime", "RuntimeOptions", "RuntimeSettings", "available_runtimes"]


def available_runtimes() -> list[str]:
    """Names of the runtimes whose packages are importable here."""
    return [name for name, cls in RUNTIMES.items() if cls.available()]
