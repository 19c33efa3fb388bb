"""``RuntimeOptions``: the typed knobs a recipe, ``accelerate`` or the plan runner give a runtime.

Each runtime reads the fields it knows and ignores the others. ``plan.json`` records them
as a JSON object of the fields that differ from their defaults (``"hints"``, the format
plans have always had); :meth:`RuntimeOptions.from_dict` reads that object back, checking
each value, and :meth:`RuntimeOptions.to_dict` writes it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from inferno.errors import ConfigError

log = logging.getLogger(__name__)

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
"""``torch.compile`` modes."""


@dataclass(frozen=True)
class RuntimeOptions:
    """Runtime knobs, each read by the runtimes it names; the defaults leave the choice to the runtime."""

    sequence_inputs: tuple[str, ...] = ()
    """The token-sequence inputs of a text model ([batch, seq]): runtimes that bucket shapes
    (torch-compile) pad them with 0 along axis 1."""
    max_sequence_length: int | None = None
    """The longest token sequence: the top of TensorRT's shape profile (default 128)."""
    max_batch_size: int | None = None
    """The largest batch a GPU runtime prepares for: TensorRT's profile (default 256),
    torch-compile's largest bucket (default 256; larger batches run in chunks)."""
    opt_batch_size: int | None = None
    """The batch TensorRT's profile is optimized for (default 32)."""
    batch_first: bool = True
    """False: some tensor has its rows elsewhere than axis 0 (``state [2, batch, 128]``), so
    a batch must not be split on axis 0 (OpenVINO streams)."""
    cache_dir: Path | None = None
    """Where a runtime may persist what it builds (TensorRT engines): the version folder when
    served from a repository. Set by the plan runner, never recorded in a plan."""
    dynamic_quantization_group_size: int | None = None
    """OpenVINO: quantize activations per group of this many at run time (INT8-weight recipes)."""
    trt_workspace_bytes: int | None = None
    """TensorRT's builder workspace (default 4 GiB)."""
    compile_mode: str | None = None
    """``torch.compile`` mode (one of ``COMPILE_MODES``; default ``max-autotune-no-cudagraphs``)."""
    cuda_graphs: bool = True
    """torch-compile on CUDA: capture one CUDA graph per bucket (there are none on the CPU)."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RuntimeOptions:
        """Read the ``hints`` object of a plan (or a recipe's keywords), checking each value.

        Keys this version does not know are left out with a warning, as older versions ignored them.

        Raises:
            ConfigError: naming the hint, what it expects and the value found.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"hints: expected an object of runtime options, got {data!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            log.warning("runtime hints %s are unknown here and ignored; known: %s", unknown, ", ".join(sorted(known)))
        values: dict[str, Any] = {key: _CHECKS[key](key, value) for key, value in data.items() if key in known}
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The fields that differ from their defaults, as JSON values (what ``plan.json`` records)."""
        default = RuntimeOptions()
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value != getattr(default, f.name):
                out[f.name] = list(value) if isinstance(value, tuple) else str(value) if isinstance(value, Path) else value
        return out

    def with_defaults(self, **values: Any) -> RuntimeOptions:
        """These options, with ``values`` filling the fields still at their defaults."""
        default = RuntimeOptions()
        unset = {k: v for k, v in values.items() if getattr(self, k) == getattr(default, k)}
        return replace(self, **unset)


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"hint {key}: expected an integer >= 1, got {value!r}")
    return int(value)


def _flag(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"hint {key}: expected true or false, got {value!r}")
    return value


def _names(key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(n, str) for n in value):
        raise ConfigError(f"hint {key}: expected a list of input names, got {value!r}")
    return tuple(value)


def _folder(key: str, value: Any) -> Path | None:
    if value is None or value == "":
        return None
    if not isinstance(value, (str, Path)):
        raise ConfigError(f"hint {key}: expected a folder path, got {value!r}")
    return Path(value)


def _mode(key: str, value: Any) -> str:
    if value not in COMPILE_MODES:
        raise ConfigError(f"hint {key}: expected one of {', '.join(COMPILE_MODES)}, got {value!r}")
    return str(value)


_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "sequence_inputs": _names,
    "max_sequence_length": _positive_int,
    "max_batch_size": _positive_int,
    "opt_batch_size": _positive_int,
    "batch_first": _flag,
    "cache_dir": _folder,
    "dynamic_quantization_group_size": _positive_int,
    "trt_workspace_bytes": _positive_int,
    "compile_mode": _mode,
    "cuda_graphs": _flag,
}
