"""The ``Pass`` interface: one ONNX-to-ONNX rewrite, with typed options and a registry.

Every pass follows one template: ``applies_to`` (cheap, decides whether the pass is worth
building on this model and machine) then ``run`` (writes the rewritten graph to ``dst``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, TypeVar

import numpy as np
import onnx
from pydantic import BaseModel, ConfigDict

from inferno.errors import NothingToDo as NothingToDo  # re-export
from inferno.hardware import HardwareInfo

Feeds = dict[str, np.ndarray]


class PassOptions(BaseModel):
    """Base of every pass's typed options."""

    model_config = ConfigDict(frozen=True, extra="forbid")


@dataclass(frozen=True)
class PassContext:
    """What a pass may know about the model and machine besides the graph itself."""

    hardware: HardwareInfo
    calibration: Sequence[Feeds] = ()
    """Batches of real inputs (feeds) for calibration and sensitivity analysis, all of one
    shape (ORT's histogram calibrators stack them): text is padded to its longest sample."""
    samples: Sequence[Feeds] = ()
    """The same inputs one sample per feed, each at its own shape (text unpadded), for
    calibrators that take varying shapes: padding tokens' activations then widen no range.
    Empty: use ``calibration``."""
    model_type: str | None = None
    """Architecture family when known, e.g. ``"bert"``; transformer fusions need it."""
    attributes: dict[str, int] = field(default_factory=dict)
    """Architecture numbers when known, e.g. ``num_heads`` and ``hidden_size``."""
    threads: int = 1


O = TypeVar("O", bound=PassOptions)  # noqa: E741 (the conventional TypeVar name)


class Pass(ABC):
    """One graph rewrite. Subclasses set ``name``, ``precision`` and ``Options``."""

    name: ClassVar[str]
    precision: ClassVar[str] = "fp32"
    """Numeric precision of the graph this pass produces (``fp32``, ``int8``, ``bf16``, ...)."""
    Options: ClassVar[type[PassOptions]] = PassOptions

    def __init__(self, options: PassOptions | None = None) -> None:
        self.options = options if options is not None else self.Options()

    def applies_to(self, model: onnx.ModelProto, ctx: PassContext) -> bool:
        """Called before ``run``: False when the pass has nothing to do on this graph or machine."""
        return True

    @abstractmethod
    def run(self, src: Path, dst: Path, ctx: PassContext) -> None:
        """Read the graph at ``src``, write the rewritten graph to ``dst``.

        Raises:
            PassError: when the graph cannot be transformed.
        """

    def describe(self) -> str:
        opts = self.options.model_dump()
        return self.name + (f"({', '.join(f'{k}={v}' for k, v in opts.items())})" if opts else "")


PASSES: dict[str, type[Pass]] = {}
"""Every registered pass by name."""

P = TypeVar("P", bound=type[Pass])


def register(cls: P) -> P:
    """Class decorator: add a pass to ``PASSES`` under its ``name``."""
    PASSES[cls.name] = cls
    return cls


def make_pass(name: str, **options: object) -> Pass:
    """Build a registered pass with validated options."""
    cls = PASSES[name]
    return cls(cls.Options(**options))


OptionsFactory = Callable[..., PassOptions]
