"""The one table of Open Inference Protocol v2 datatypes and the numpy dtypes that hold them.

Every element on the wire is little-endian. ``BYTES`` elements are byte strings of any
length: numpy holds them in ``object`` arrays, and the binary extension frames each one as a
4-byte little-endian length then its bytes. ``BF16`` has no numpy dtype: inferno's server
neither takes nor returns it (it is not in :data:`DATATYPES`), but a client may meet it in
another server's metadata; its values are then made in float32 and sent as the top two bytes
of each (:func:`value_dtype`, :func:`wire_size`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from inferno.errors import UserInputError

DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
"""The datatypes inferno's server takes and returns → the dtype of their elements."""

BF16 = "BF16"

KNOWN: tuple[str, ...] = (*(name for name in DATATYPES if name != "BYTES"), BF16, "BYTES")
"""Every datatype a client may send: :data:`DATATYPES` and ``BF16``."""

_NAMES = {dtype: name for name, dtype in DATATYPES.items() if name != "BYTES"}
_FLOAT32 = np.dtype("<f4")


def datatype_of(dtype: np.dtype[Any] | str) -> str:
    """The protocol datatype of a numpy dtype (``float32`` → ``FP32``; strings → ``BYTES``).

    Raises:
        UserInputError: no datatype holds it (complex numbers, datetimes).
    """
    dt = np.dtype(dtype)
    if dt.kind in "OSU":
        return "BYTES"
    name = _NAMES.get(dt)
    if name is None:
        raise UserInputError(f"dtype {dt}: no Open Inference Protocol datatype for it")
    return name


def value_dtype(datatype: str) -> np.dtype[Any]:
    """The dtype a client makes values of ``datatype`` in (``BF16``: float32).

    Raises:
        KeyError: not a datatype of :data:`KNOWN`.
    """
    return _FLOAT32 if datatype == BF16 else DATATYPES[datatype]


def wire_size(datatype: str) -> int | None:
    """Bytes per element on the wire; None for ``BYTES`` (each element its own length).

    Raises:
        KeyError: not a datatype of :data:`KNOWN`.
    """
    if datatype == "BYTES":
        return None
    return 2 if datatype == BF16 else DATATYPES[datatype].itemsize


def config_type(datatype: str) -> str:
    """The model configuration's ``data_type`` of a datatype: ``TYPE_FP32``, ``TYPE_STRING``."""
    return f"TYPE_{'STRING' if datatype == 'BYTES' else datatype}"
