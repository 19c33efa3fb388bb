"""Property: whatever a client posts to an infer endpoint, the server answers it and keeps serving.

Never a 5xx other than 503/504; every refusal is JSON ``{"error": "..."}``; a good request
still succeeds after the whole run.
"""

from __future__ import annotations

import gzip
import json
import math
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .support import Response, Server, assert_good_request, parse_metrics, running

pytestmark = pytest.mark.slow

FUZZ = settings(max_examples=200, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
             "FP16", "FP32", "FP64", "BYTES"]


@pytest.fixture(scope="module")
def server(model_repository: Path) -> Iterator[Server]:
    with running(model_repository, max_batch_size=8, max_body_bytes=256 * 1024, cache_bytes=2**20) as s:
        yield s


# -- strategies ----------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=24,
)
paths = st.sampled_from(["/v2/models/digits/infer", "/v2/models/minilm/infer",
                         "/v2/models/digits/versions/1/infer", "/v2/models/nope/infer"])
names = st.sampled_from(["pixels", "text", "PIXELS", ""]) | st.text(max_size=8)
datatypes = st.sampled_from([*DATATYPES, "BF16", "FLOAT", "string", ""]) | st.text(max_size=6)
shapes = (st.lists(st.integers(0, 12), max_size=4).filter(lambda s: math.prod(s) <= 1024)
          | st.lists(st.integers(-3, 2**40), max_size=5) | json_values)
texts = st.text(max_size=40) | st.sampled_from(["", " ", "a" * 600, "naïve café ✓", "\x00\ud7ff", "lone \ud800 surrogate"])

MUTATIONS = ["name", "datatype", "shape", "one-less", "one-more", "data-random", "data-element", "nested",
             "no-data", "binary-size", "header-length", "trailing-bytes", "bad-utf8", "extra-input",
             "duplicate-input", "tensor-parameters", "request-parameters", "outputs", "id", "encoding"]


def _binary_of(tensor: dict[str, Any]) -> bytes:
    """The tensor's data as Triton's binary extension sends it (the tensor keeps its datatype)."""
    data = tensor["data"]
    if tensor["datatype"] == "BYTES":
        return b"".join(struct.pack("<I", len(b)) + b for b in (s.encode("utf-8", "surrogatepass") for s in data))
    return np.asarray(data, dtype=np.float32).tobytes()


@st.composite
def infer_requests(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str]]:
    """A valid request for digits or minilm, then 0 to 3 mutations of it (path, body, headers)."""
    model = draw(st.sampled_from(["digits", "minilm"]))
    path = draw(st.sampled_from([f"/v2/models/{model}/infer"] * 4 + [
        f"/v2/models/{model}/versions/1/infer", f"/v2/models/{model}/versions/2/infer",
        f"/v2/models/{'minilm' if model == 'digits' else 'digits'}/infer"]))
    rows = draw(st.integers(1, 10))  # the server's max_batch_size is 8
    if model == "digits":
        pixels = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).random((rows, 64)) * 16
        tensor: dict[str, Any] = {"name": "pixels", "datatype": "FP32", "shape": [rows, 1, 8, 8],
                                  "data": pixels.reshape(-1).tolist()}
    else:
        tensor = {"name": "text", "datatype": "BYTES", "shape": [rows],
                  "data": draw(st.lists(texts, min_size=rows, max_size=rows))}
    doc: dict[str, Any] = {"inputs": [tensor]}
    binary = draw(st.booleans())
    mutations = draw(st.lists(st.sampled_from(MUTATIONS), max_size=3))
    size_offset, trailing, header_length, encoding, bad_utf8 = 0, b"", "right", None, False
    for mutation in mutations:
        data = tensor.get("data")
        if mutation == "name":
            tensor["name"] = draw(names)
        elif mutation == "datatype":
            tensor["datatype"] = draw(datatypes)
        elif mutation == "shape":
            tensor["shape"] = draw(shapes)
        elif mutation in ("one-less", "one-more") and isinstance(data, list):
            tensor["data"] = data[:-1] if mutation == "one-less" else [*data, data[0] if data else 1]
        elif mutation == "data-random":
            tensor["data"], binary = draw(json_values), False
        elif mutation == "data-element" and isinstance(data, list) and data:
            tensor["data"] = [*data]
            tensor["data"][draw(st.integers(0, len(data) - 1))] = draw(json_values)
            binary = False
        elif mutation == "nested" and isinstance(data, list) and data:
            width = draw(st.integers(1, len(data)))
            tensor["data"], binary = [data[i:i + width] for i in range(0, len(data), width)], False
        elif mutation == "no-data":
            tensor.pop("data", None)
            binary = False
        elif mutation == "binary-size":
            size_offset = draw(st.sampled_from([-4, -1, 1, 4, 10**6]))
        elif mutation == "header-length":
            header_length = draw(st.sampled_from(["none", "off", "random"]))
        elif mutation == "trailing-bytes":
            trailing = draw(st.binary(min_size=1, max_size=16))
        elif mutation == "bad-utf8":
            bad_utf8 = True
        elif mutation == "extra-input":
            doc["inputs"].append({"name": draw(names), "datatype": draw(datatypes), "shape": draw(shapes),
                                  "data": draw(json_values)})
        elif mutation == "duplicate-input":
            doc["inputs"].append(dict(tensor))
        elif mutation == "tensor-parameters":
            tensor["parameters"] = draw(st.dictionaries(
                st.sampled_from(["binary_data_size", "x"]) | st.text(max_size=6), json_values, max_size=2))
        elif mutation == "request-parameters":
            doc["parameters"] = draw(st.fixed_dictionaries({}, optional={
                "timeout": st.integers(-5, 10**7) | json_values,
                "binary_data_output": st.booleans() | json_values,
                "extra": json_values,
            }))
        elif mutation == "outputs":
            doc["outputs"] = draw(st.lists(st.fixed_dictionaries(
                {"name": st.sampled_from(["probabilities", "embedding"]) | st.text(max_size=6)},
                optional={"parameters": st.fixed_dictionaries({}, optional={
                    "binary_data": st.booleans() | json_values,
                    "classification": st.integers(-2, 12) | json_values,
                })},
            ), min_size=1, max_size=3) | json_values)  # an empty list: test_protocol covers it
        elif mutation == "id":
            doc["id"] = draw(st.text(max_size=8) | json_values)
        elif mutation == "encoding":
            encoding = draw(st.sampled_from(["gzip", "deflate", "identity", "br", "gzip-not", "deflate-not"]))

    blob = b""
    if binary and isinstance(tensor.get("data"), list) and tensor.get("datatype") in ("FP32", "BYTES"):
        try:
            blob = _binary_of(tensor)
        except (TypeError, ValueError, AttributeError, UnicodeEncodeError):
            blob = b""
        if blob:
            if bad_utf8 and tensor["datatype"] == "BYTES":
                blob = struct.pack("<I", 2) + b"\xff\xfe" + blob[4 + struct.unpack_from("<I", blob)[0]:]
            del tensor["data"]
            tensor.setdefault("parameters", {})["binary_data_size"] = len(blob) + size_offset
    header = json.dumps(doc).encode()
    headers = {"Content-Type": "application/json"}
    if header_length == "right" and blob:
        headers["Inference-Header-Content-Length"] = str(len(header))
    elif header_length == "off":
        headers["Inference-Header-Content-Length"] = str(len(header) + draw(st.integers(-30, 30)))
    elif header_length == "random":
        headers["Inference-Header-Content-Length"] = draw(
            st.integers(-(2**66), 2**66).map(str) | st.text(alphabet="0123456789+-_ xe.", max_size=12))
    body = header + blob + trailing
    if encoding is not None:
        if encoding in ("gzip", "deflate"):
            body = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
        headers["Content-Encoding"] = encoding.removesuffix("-not")
    return path, body, headers


# -- the property -------------------------------------------------------------------------------


def check_answer(response: Response) -> None:
    status = response.status
    assert status < 500 or status in (503, 504), (status, response.body[:500])
    if status >= 400:
        response.error()  # JSON {"error": "<non-empty string>"}
        return
    assert status == 200, (status, response.body[:500])
    length = response.headers.get("inference-header-content-length")
    header = response.body if length is None else response.body[:int(length)]
    doc = json.loads(header)
    assert doc["model_name"] in ("digits", "minilm") and doc["outputs"], doc
    if length is not None:
        sizes = sum(out.get("parameters", {}).get("binary_data_size", 0) for out in doc["outputs"])
        assert int(length) + sizes == len(response.body), doc


@FUZZ
@given(path=paths, body=st.binary(max_size=2048) | json_values.map(lambda v: json.dumps(v).encode()),
       encoding=st.sampled_from([None, None, None, "gzip", "deflate", "br"]))
def test_arbitrary_bodies(server: Server, path: str, body: bytes, encoding: str | None) -> None:
    headers = {"Content-Type": "application/json"}
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    check_answer(server.request("POST", path, body, headers))


@FUZZ
@given(request=infer_requests())
def test_structured_infer_requests(server: Server, request: tuple[str, bytes, dict[str, str]]) -> None:
    path, body, headers = request
    check_answer(server.request("POST", path, body, headers))


def test_server_still_serves_after_the_fuzz(server: Server) -> None:
    assert_good_request(server)
    metrics = parse_metrics(server.request("GET", "/metrics").text)
    backend = {k: v for k, v in metrics.items() if 'reason="backend"' in k and v}
    assert not backend, backend
