"""What a model takes and returns: named tensors with dtypes and (partly symbolic) shapes."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import onnx
from onnx import helper

from inferno.errors import DataMismatchError

Dim = int | str
"""A fixed size, or the name of a dynamic axis such as ``"batch"``."""


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

    def describe(self) -> str:
        dims = ", ".join(str(d) for d in self.shape)
        return f"{self.dtype} [{dims}]"

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
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorSpec:
        return cls(data["name"], data["dtype"], tuple(data["shape"]))


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

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
        initializers = {i.name for i in model.graph.initializer}
        inputs = tuple(_spec(v) for v in model.graph.input if v.name not in initializers)
        outputs = tuple(_spec(v) for v in model.graph.output)
        return cls(inputs, outputs)

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


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    tensor = value.type.tensor_type
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name
    shape: list[Dim] = []
    for i, dim in enumerate(tensor.shape.dim):
        if dim.HasField("dim_value"):
            shape.append(int(dim.dim_value))
        else:
            shape.append(dim.dim_param or f"dim{i}")
    return TensorSpec(value.name, dtype, tuple(shape))
