"""The one datatype table, and the tables derived from it elsewhere."""

from __future__ import annotations

import numpy as np
import pytest

from inferno.errors import UserInputError
from inferno.protocol.datatypes import (
    DATATYPES,
    KNOWN,
    config_type,
    datatype_of,
    value_dtype,
    wire_size,
)


def test_datatype_of_numpy_dtypes() -> None:
    assert datatype_of("float32") == "FP32"
    assert datatype_of(np.dtype("<i8")) == "INT64"
    assert datatype_of(np.dtype(object)) == datatype_of("U3") == datatype_of("S2") == "BYTES"
    assert datatype_of(np.bool_) == "BOOL"
    with pytest.raises(UserInputError, match="complex64"):
        datatype_of("complex64")
    for name, dtype in DATATYPES.items():
        assert name == "BYTES" or datatype_of(dtype) == name


def test_bf16_is_known_to_clients_not_to_the_server() -> None:
    assert "BF16" in KNOWN and "BF16" not in DATATYPES
    assert KNOWN[-2:] == ("BF16", "BYTES")
    assert value_dtype("BF16") == np.float32 and wire_size("BF16") == 2
    assert wire_size("BYTES") is None and wire_size("FP16") == 2 and wire_size("UINT64") == 8
    assert value_dtype("INT32") == np.int32
    with pytest.raises(KeyError):
        value_dtype("COMPLEX64")


def test_config_types() -> None:
    assert config_type("FP32") == "TYPE_FP32"
    assert config_type("BYTES") == "TYPE_STRING"


def test_openapi_lists_the_table() -> None:
    from inferno.serving.openapi import openapi

    assert _first_enum(openapi("0")) == ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16",
                                         "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"]


def _first_enum(doc: object) -> list[str] | None:
    if isinstance(doc, dict):
        if doc.get("type") == "string" and "BYTES" in doc.get("enum", []):
            return list(doc["enum"])
        children = list(doc.values())
    elif isinstance(doc, list):
        children = doc
    else:
        return None
    for child in children:
        found = _first_enum(child)
        if found is not None:
            return found
    return None


def test_grpc_contents_fields_derive_from_the_table() -> None:
    pytest.importorskip("grpc")
    pytest.importorskip("tritonclient.grpc")
    from inferno.serving.grpc_service import _TYPED

    assert _TYPED == {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
                      "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
                      "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
                      "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents"}
