"""The one owner of NVML in the process: ``nvml()`` initialises it once, for probes and meters.

``nvmlInit`` is reference-counted by the driver and costs milliseconds; the hardware probe, the
GPU metrics and the energy meters all ask here instead of initialising it each on their own.
"""

from __future__ import annotations

import threading
from types import ModuleType

NVML_NOT_INSTALLED = "nvidia-ml-py is not installed"

_nvml_lock = threading.Lock()
_nvml_state: tuple[ModuleType | None, str] | None = None


def nvml() -> tuple[ModuleType | None, str]:
    """The initialised pynvml module, or None and why; tried once per process."""
    global _nvml_state
    with _nvml_lock:
        if _nvml_state is None:
            _nvml_state = _init()
        return _nvml_state


def _init() -> tuple[ModuleType | None, str]:
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return None, NVML_NOT_INSTALLED
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError for "no driver", NVMLLibraryMismatchError, ...
        return None, str(exc) or type(exc).__name__
    return pynvml, ""


def reset_nvml() -> None:
    """Forget the once-per-process NVML initialisation (tests that swap ``pynvml`` call it)."""
    global _nvml_state
    with _nvml_lock:
        _nvml_state = None
