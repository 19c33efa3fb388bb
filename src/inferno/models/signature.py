"""What a model takes and returns: named tensors with dtypes and (partly symbolic) shapes."""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import numpy as np
import onnx
from onnx import helper

from inferno.errors import DataMismatchError

Dim = int | str
"""A fixed size, or the name of a dynamic axis such as ``"batch"``."""

ANONYMOUS = "?"
"""Prefix of the names given to dynamic axes the graph leaves unnamed (``?x.2``: axis 2 of
``x``). Each such axis is its own: two unnamed axes are never assumed to be one size."""

BATCH_NAMES = ("batch", "batch_size", "n", "bs", "b", "N")
"""Axis names that mean "rows of a batch" when a graph names its axes."""


def is_anonymous(dim: Dim) -> bool:
    return isinstance(dim, str) and dim.startswith(ANONYMOUS)


class Task(StrEnum):
    """What the model's first output means; decides the accuracy metric."""

    CLASSIFICATION = "classification"
    EMBEDDING = "embedding"
    REGRESSION = "regression"
    OTHER = "other"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    """A numpy dtype name: ``float32``, ``int64``, ..."""
    shape: tuple[Dim, ...]
    batch_axis: int | None = 0
    """The axis that holds a batch's rows (``state [2, batch, 128]``: 1). None: the tensor is
    one value for the whole call (a scalar sample rate, a fixed-size state), not per row."""

    def describe(self) -> str:
        dims = ", ".join("?" if is_anonymous(d) else str(d) for d in self.shape)
        return f"{self.dtype} [{dims}]"

    def row_shape(self) -> tuple[Dim, ...]:
        """The shape of one row: ``shape`` without the batch axis."""
        if self.batch_axis is None:
            return self.shape
        return self.shape[: self.batch_axis] + self.shape[self.batch_axis + 1 :]

    def check(self, array: np.ndarray) -> None:
        """Raise DataMismatchError naming this input when ``array`` does not fit."""
        found = f"{array.dtype} {list(array.shape)}"
        if array.dtype != np.dtype(self.dtype) or array.ndim != len(self.shape) or any(
            isinstance(d, int) and d != s for d, s in zip(self.shape, array.shape, strict=True)
        ):
            raise DataMismatchError(
                f"input {self.name!r}: expected {self.describe()}, got {found}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape),
                "batch_axis": self.batch_axis}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorSpec:
        shape = tuple(data["shape"])
        return cls(data["name"], data["dtype"], shape,
                   data.get("batch_axis", 0 if shape else None))


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def batch_first(self) -> bool:
        """Every input and output has its rows on axis 0: the layout batching can concatenate."""
        return all(t.batch_axis == 0 for t in (*self.inputs, *self.outputs))

    @property
    def batched(self) -> bool:
        """Some input has a batch axis (else one call is one fixed-size sample)."""
        return any(t.batch_axis is not None for t in self.inputs)

    def rows(self, feeds: dict[str, np.ndarray]) -> int:
        """How many rows a call's feeds hold (1 for a model without a batch axis)."""
        for spec in self.inputs:
            if spec.batch_axis is not None and spec.name in feeds:
                return int(feeds[spec.name].shape[spec.batch_axis])
        return 1

    def with_batch_axes(self, axes: dict[str, int | None]) -> Signature:
        """A copy whose tensors named in ``axes`` have those batch axes."""
        def moved(spec: TensorSpec) -> TensorSpec:
            return replace(spec, batch_axis=axes[spec.name]) if spec.name in axes else spec
        return Signature(tuple(map(moved, self.inputs)), tuple(map(moved, self.outputs)))

    def primary_output(self) -> int:
        """Index of the output that accuracy is judged on: the first float output of rank 2, else 0."""
        for i, spec in enumerate(self.outputs):
            if spec.dtype.startswith("float") and len(spec.shape) == 2:
                return i
        return 0

    def check_feeds(self, feeds: dict[str, np.ndarray]) -> None:
        """Raise DataMismatchError when feeds miss, add or mistype an input."""
        missing = [t.name for t in self.inputs if t.name not in feeds]
        extra = sorted(set(feeds) - set(self.input_names))
        if missing or extra:
            raise DataMismatchError(
                f"inputs: expected {list(self.input_names)}, got {sorted(feeds)}"
                + (f" (missing {missing})" if missing else "")
                + (f" (unknown {extra})" if extra else "")
            )
        for spec in self.inputs:
            spec.check(feeds[spec.name])

    @classmethod
    def from_onnx(cls, model: onnx.ModelProto) -> Signature:
        """The graph's inputs (initializers excluded) and outputs, batch axes guessed by name
        (``guess_batch_axes``); a loader that runs the graph can correct them."""
        initializers = {i.name for i in model.graph.initializer}
        inputs = tuple(_spec(v) for v in model.graph.input if v.name not in initializers)
        outputs = tuple(_spec(v) for v in model.graph.output)
        return cls(inputs, outputs).with_batch_axes(guess_batch_axes([*inputs, *outputs]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Signature:
        return cls(
            tuple(TensorSpec.from_dict(t) for t in data["inputs"]),
            tuple(TensorSpec.from_dict(t) for t in data["outputs"]),
        )


def guess_batch_axes(specs: list[TensorSpec]) -> dict[str, int | None]:
    """Each tensor's batch axis, from the names the graph gives its axes.

    The batch is the named axis that a conventional batch name (``batch``, ``N``, ...)
    identifies, else the name on axis 0 of the first tensor whose axis 0 is named; a tensor
    that has that name somewhere has its batch there (``state [2, batch, 128]``: axis 1).
    Elsewhere (exporters name output axes anew), axis 0 when it is dynamic, else the one
    unnamed dynamic axis of a tensor whose other axes are fixed; else None (scalars, fixed
    sizes, ``image [1, 1, 64, width]``: a named axis other than the batch is not rows).
    """
    named = [d for s in specs for d in s.shape if isinstance(d, str) and not is_anonymous(d)]
    batch = next((n for n in BATCH_NAMES if n in named), None)
    if batch is None:
        batch = next((s.shape[0] for s in specs if s.shape and isinstance(s.shape[0], str)
                      and not is_anonymous(s.shape[0])), None)
    axes: dict[str, int | None] = {}
    for spec in specs:
        dynamic = [i for i, d in enumerate(spec.shape) if isinstance(d, str)]
        if batch is not None and batch in spec.shape:
            axes[spec.name] = spec.shape.index(batch)
        elif dynamic and dynamic[0] == 0:
            axes[spec.name] = 0
        elif len(dynamic) == 1 and is_anonymous(spec.shape[dynamic[0]]):
            axes[spec.name] = dynamic[0]  # state [2, ?, 128]; a named axis (width) is not rows
        else:
            axes[spec.name] = None
    return axes


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    tensor = value.type.tensor_type
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name
    shape: list[Dim] = []
    for i, dim in enumerate(tensor.shape.dim):
        if dim.HasField("dim_value") and dim.dim_value > 0:
            shape.append(int(dim.dim_value))
        else:  # a name, nothing, or a -1 / 0 that some exporters write for "dynamic"
            shape.append(dim.dim_param or f"{ANONYMOUS}{value.name}.{i}")
    return TensorSpec(value.name, dtype, tuple(shape))
