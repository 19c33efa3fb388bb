"""What the students share: the ``key=value;...`` spec syntax, epochs, and the teacher's reference."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from inferno.errors import ConfigError
from inferno.models.model import Model


def parse_spec(spec: str, keys: Mapping[str, str]) -> dict[str, str]:
    """``key=value;key=value`` → dict; ``keys`` maps each allowed key to what it takes.

    Raises:
        ConfigError: an empty item, a missing ``=``, an unknown or repeated key (the message
            names the spec, the key and what is allowed).
    """
    allowed = "; ".join(f"{k}={v}" for k, v in keys.items())
    values: dict[str, str] = {}
    for item in (part.strip() for part in spec.split(";")):
        key, equals, value = (s.strip() for s in item.partition("="))
        if not equals or not key or not value:
            raise ConfigError(f"student spec {spec!r}: expected key=value items separated by ';' "
                              f"({allowed}), got {item!r}")
        if key not in keys:
            raise ConfigError(f"student spec {spec!r}: unknown key {key!r}, expected one of: {allowed}")
        if key in values:
            raise ConfigError(f"student spec {spec!r}: key {key!r} given twice")
        values[key] = value
    return values


def spec_number(spec: str, key: str, value: str, kind: Callable[[str], Any], low: float,
            high: float, expected: str) -> Any:
    try:
        number = kind(value)
    except ValueError:
        number = None
    if number is None or not math.isfinite(number) or not low <= number <= high:
        raise ConfigError(f"student spec {spec!r}: {key}={value!r}: expected {expected}")
    return number


def check_epochs(epochs: int | None, default: int) -> int:
    """``epochs`` or the default; ConfigError below 1."""
    if epochs is None:
        return default
    if epochs < 1:
        raise ConfigError(f"--epochs: expected a whole number >= 1, got {epochs}")
    return epochs


def teacher_ref(teacher: Model) -> str:
    """What ``load_model`` takes to load ``teacher`` again (its student folder records it)."""
    ref = teacher.source.removeprefix("bundled:") or teacher.name
    path = Path(ref).expanduser()
    return str(path.resolve()) if path.exists() else ref
