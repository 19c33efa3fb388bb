"""Tensors as v2 model metadata describes them, and the paths of a model's endpoints.

:class:`TensorSpec` is the wire's view of a tensor: a protocol datatype and a shape where
``-1`` marks a variable dimension. It is not :class:`inferno.models.signature.TensorSpec`,
which describes an ONNX graph's tensor one layer down (a numpy dtype, named symbolic axes,
the axis that holds a batch's rows): the server derives this one from that one when it
answers metadata, and loses the axis names and the batch axis on the way, as the protocol
does. Clients (bench, monitor, the cascade's cloud) only ever see this one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a model's metadata: ``-1`` marks a variable dimension."""

    name: str
    datatype: str
    """A protocol datatype: ``FP32``, ``INT64``, ``BYTES``, ..."""
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    def describe(self) -> str:
        """``FP32 [-1, 4]``."""
        return f"{self.datatype} {list(self.shape)}"

    @classmethod
    def from_dict(cls, doc: Any) -> TensorSpec:
        """A metadata document's tensor (the datatype upper-cased, the dimensions as ints).

        Raises:
            KeyError, TypeError, ValueError: ``doc`` is not ``{name, datatype, shape}``.
        """
        return cls(str(doc["name"]), str(doc["datatype"]).upper(), tuple(int(d) for d in doc["shape"]))


def model_path(model: str, version: str | None = None, suffix: str = "") -> str:
    """``/v2/models/{model}[/versions/{version}]{suffix}``, model and version URL-quoted."""
    path = f"/v2/models/{quote(model, safe='')}"
    if version:
        path += f"/versions/{quote(version, safe='')}"
    return path + suffix


def named(model: str, version: str | None = None) -> str:
    """``model 'digits'`` or ``model 'digits' version '2'``, as messages name a model."""
    return f"model {model!r}" + (f" version {version!r}" if version else "")
