"""A model as inferno sees it: an FP32 ONNX graph, its signature, task, data and preprocessing."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from inferno.models.signature import Signature, Task

Samples = Sequence[str] | dict[str, np.ndarray]
"""Natural inputs: a list of strings for text models, arrays with a leading batch axis otherwise."""


def count_samples(samples: Samples) -> int:
    if isinstance(samples, dict):
        return len(next(iter(samples.values())))
    return len(samples)


def slice_samples(samples: Samples, start: int, stop: int) -> Samples:
    if isinstance(samples, dict):
        return {k: v[start:stop] for k, v in samples.items()}
    return samples[start:stop]


class Preprocessor(Protocol):
    """Turns natural inputs into the graph's input tensors (feeds)."""

    @property
    def kind(self) -> str:
        """``text`` or ``tensor``."""
        ...

    def encode(self, samples: Samples) -> dict[str, np.ndarray]:
        """Called once per batch; text is padded only to the longest sample of the batch."""
        ...

    def files(self) -> dict[str, Path]:
        """Files the preprocessor needs at serving time (copied next to the plan)."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """What ``plan.json`` records to rebuild this preprocessor."""
        ...


@dataclass(frozen=True)
class TensorPreprocessor:
    """Tensor models take their arrays as they are, once the rows are where the graph wants them.

    Samples always hold rows on axis 0 (so they slice and count alike for every model).
    ``batch_axes`` names the inputs whose graph batch axis is elsewhere (``state [2, batch,
    128]``: 1), or that have none (None: one value per call, e.g. a sample rate: the first
    row's value is fed).
    """

    kind: str = "tensor"
    batch_axes: dict[str, int | None] = field(default_factory=dict)

    def encode(self, samples: Samples) -> dict[str, np.ndarray]:
        if not isinstance(samples, dict):
            raise TypeError("a tensor model takes a dict of arrays")
        feeds = {}
        for name, rows in samples.items():
            axis = self.batch_axes.get(name, 0)
            if axis is None:
                feeds[name] = np.asarray(rows[0])  # a 0-d array, not a numpy scalar
            elif axis == 0:
                feeds[name] = rows
            else:
                feeds[name] = np.ascontiguousarray(np.moveaxis(rows, 0, axis))
        return feeds

    def files(self) -> dict[str, Path]:
        return {}

    def to_dict(self) -> dict[str, Any]:
        info: dict[str, Any] = {"kind": self.kind}
        if self.batch_axes:
            info["batch_axes"] = dict(self.batch_axes)
        return info


def tensor_preprocessor(signature: Signature) -> TensorPreprocessor:
    """The preprocessor that lays rows out as ``signature``'s batch axes say."""
    return TensorPreprocessor(batch_axes={s.name: s.batch_axis for s in signature.inputs
                                          if s.batch_axis != 0})


def as_rows(array: np.ndarray, batch_axis: int | None, rows: int) -> np.ndarray:
    """A graph-layout array as samples: its batch axis first, or repeated per row when it has none."""
    if batch_axis is None:
        return np.repeat(array[np.newaxis], rows, axis=0)
    return array if batch_axis == 0 else np.moveaxis(array, batch_axis, 0)


@dataclass(frozen=True)
class EvalData:
    """Data that every accuracy figure is computed on."""

    samples: Samples
    labels: np.ndarray | None = None
    source: str = "unknown"
    """Where it came from, shown in the report: a bundled split, a file, or 'synthesized'."""
    synthetic: bool = False

    def __len__(self) -> int:
        return count_samples(self.samples)

    def take(self, n: int | None) -> EvalData:
        if n is None or n >= len(self):
            return self
        labels = None if self.labels is None else self.labels[:n]
        return replace(self, samples=slice_samples(self.samples, 0, n), labels=labels)

    def batches(self, batch_size: int) -> Iterator[Samples]:
        for start in range(0, len(self), batch_size):
            yield slice_samples(self.samples, start, start + batch_size)


@dataclass
class Model:
    """An imported model, ready for passes, runtimes and measurement."""

    name: str
    onnx_path: Path
    """The FP32 reference graph with a dynamic batch axis."""
    signature: Signature
    task: Task
    eval_data: EvalData
    preprocessor: Preprocessor = field(default_factory=TensorPreprocessor)
    calibration: EvalData | None = None
    """Samples for static quantization; the evaluation data when None."""
    torch_factory: Callable[[], Any] | None = None
    """Builds the source ``torch.nn.Module`` (called with feeds in signature order): the eager baseline."""
    architecture: dict[str, Any] = field(default_factory=dict)
    """Architecture hints for passes, e.g. ``{"model_type": "bert", "num_heads": 12}``."""
    source: str = ""
    """How the model was referenced (a path, ``module:attr`` or ``bundled:<name>``)."""
    description: str = ""
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """One call's worth of each input at batch 1 (graph layout), as the evaluation data has
    it: recorded in the report and the plan, and what ``inferno serve`` warms up with."""
    shapes_source: str = ""
    """How those sizes were found: ``--shape``, ``--data``, ``graph`` (all fixed) or ``probe``."""

    @property
    def calibration_data(self) -> EvalData:
        return self.calibration if self.calibration is not None else self.eval_data

    @property
    def is_text(self) -> bool:
        return self.preprocessor.kind == "text"
