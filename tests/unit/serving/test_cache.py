"""The response cache: bounded in bytes, least recently used out first; and its keys."""

from __future__ import annotations

import random
from collections import OrderedDict
from typing import Any

import numpy as np
import orjson
import pytest
import tritonclient.http as httpclient

from inferno.serving.cache import ResponseCache, cache_key
from inferno.serving.protocol import InferRequest, parse_infer_request


def entry(n: int, fill: float = 0.0) -> dict[str, np.ndarray]:
    """Outputs of ``4 * n`` bytes."""
    return {"y": np.full(n, fill, dtype=np.float32)}


def size(key: bytes, outputs: dict[str, np.ndarray]) -> int:
    return len(key) + sum(a.nbytes for a in outputs.values())


def test_get_returns_a_copy_of_what_was_put() -> None:
    cache = ResponseCache(1000)
    outputs: dict[str, np.ndarray] = {
        "y": np.arange(4, dtype=np.float32),
        "z": np.ones((2, 2), dtype=np.int64),
    }
    cache.put(b"k", outputs)
    outputs["y"][0] = 99.0  # the caller's array changes after the put
    got = cache.get(b"k")
    assert got is not None and set(got) == {"y", "z"}
    np.testing.assert_array_equal(got["y"], [0.0, 1.0, 2.0, 3.0])
    np.testing.assert_array_equal(got["z"], np.ones((2, 2)))
    assert cache.get(b"missing") is None
    assert cache.bytes == size(b"k", {"y": np.zeros(4, np.float32), "z": np.ones((2, 2), np.int64)})


def test_a_cached_slice_does_not_pin_its_batch() -> None:
    batch = np.zeros((100, 8), dtype=np.float32)
    cache = ResponseCache(10_000)
    cache.put(b"k", {"y": batch[3:4]})
    got = cache.get(b"k")
    assert got is not None and got["y"].base is None and got["y"].shape == (1, 8)


def test_least_recently_used_goes_first_and_get_refreshes() -> None:
    each = size(b"a", entry(25))  # 101 bytes
    cache = ResponseCache(3 * each)
    for key in (b"a", b"b", b"c"):
        cache.put(key, entry(25))
    assert cache.get(b"a") is not None  # 'b' is now the least recently used
    cache.put(b"d", entry(25))
    assert [k for k in (b"a", b"b", b"c", b"d") if cache.get(k) is not None] == [b"a", b"c", b"d"]
    assert len(cache) == 3 and cache.bytes == 3 * each


def test_without_gets_the_oldest_goes_first() -> None:
    each = size(b"a", entry(25))
    cache = ResponseCache(2 * each)
    for key in (b"a", b"b", b"c"):
        cache.put(key, entry(25))
    assert cache.get(b"a") is None
    assert cache.get(b"b") is not None and cache.get(b"c") is not None


def test_one_big_entry_evicts_as_many_as_needed() -> None:
    cache = ResponseCache(size(b"a", entry(25)) * 4)
    for key in (b"a", b"b", b"c", b"d"):
        cache.put(key, entry(25))
    cache.put(b"e", entry(60))  # 241 bytes: three of the 101-byte entries must go
    assert [k for k in (b"a", b"b", b"c", b"d", b"e") if cache.get(k) is not None] == [b"d", b"e"]
    assert cache.bytes == size(b"d", entry(25)) + size(b"e", entry(60)) <= cache.max_bytes


def test_an_entry_larger_than_the_whole_cache_is_refused() -> None:
    cache = ResponseCache(200)
    cache.put(b"small", entry(10))
    before = cache.bytes
    cache.put(b"huge", entry(100))  # 404 bytes > 200
    assert cache.get(b"huge") is None
    assert cache.get(b"small") is not None and cache.bytes == before and len(cache) == 1


def test_an_entry_exactly_the_size_of_the_cache_fits() -> None:
    cache = ResponseCache(size(b"k", entry(10)))
    cache.put(b"old", entry(1))
    cache.put(b"k", entry(10))
    assert cache.get(b"k") is not None and cache.get(b"old") is None
    assert cache.bytes == cache.max_bytes


def test_replacing_a_key_does_not_double_count() -> None:
    cache = ResponseCache(1000)
    cache.put(b"k", entry(10, 1.0))
    cache.put(b"k", entry(20, 2.0))
    got = cache.get(b"k")
    assert got is not None and got["y"].tolist() == [2.0] * 20
    assert len(cache) == 1 and cache.bytes == size(b"k", entry(20))


def test_replacing_a_key_makes_it_the_most_recent() -> None:
    each = size(b"a", entry(25))
    cache = ResponseCache(2 * each)
    cache.put(b"a", entry(25))
    cache.put(b"b", entry(25))
    cache.put(b"a", entry(25))
    cache.put(b"c", entry(25))
    assert cache.get(b"b") is None
    assert cache.get(b"a") is not None and cache.get(b"c") is not None


def test_bytes_outputs_are_counted_by_content() -> None:
    strings = np.array([b"x" * 50, b"y" * 30], dtype=object)
    cache = ResponseCache(10_000)
    cache.put(b"k", {"s": strings})
    assert cache.bytes >= len(b"k") + 80
    got = cache.get(b"k")
    assert got is not None and got["s"].tolist() == strings.tolist()


def test_random_operations_match_a_reference_lru() -> None:
    rng = random.Random(5)
    limit = 2_000
    cache = ResponseCache(limit)
    model: OrderedDict[bytes, int] = OrderedDict()  # key -> size, least recent first
    for _ in range(2_000):
        key = f"k{rng.randrange(30)}".encode()
        if rng.random() < 0.4:
            hit = cache.get(key)
            assert (hit is not None) == (key in model)
            if key in model:
                model.move_to_end(key)
            continue
        outputs = entry(rng.randrange(0, 200))
        n = size(key, outputs)
        cache.put(key, outputs)
        if n <= limit:
            model.pop(key, None)
            model[key] = n
            while sum(model.values()) > limit:
                model.popitem(last=False)
        assert cache.bytes == sum(model.values()) <= limit
        assert len(cache) == len(model)
    every_key = [f"k{i}".encode() for i in range(30)]
    assert {k for k in every_key if cache.get(k) is not None} == set(model)


# --- keys -----------------------------------------------------------------------------------


def json_request(*inputs: tuple[str, str, list[int], list[Any]], **fields: Any) -> InferRequest:
    tensors = [{"name": n, "datatype": d, "shape": s, "data": v} for n, d, s, v in inputs]
    return parse_infer_request(orjson.dumps({"inputs": tensors, **fields}))


BASE = ("x", "FP32", [2, 3], [0.0, 1.0, 2.0, 3.0, 4.0, 5.0])


def test_identical_requests_have_equal_keys() -> None:
    assert cache_key("m", "1", json_request(BASE)) == cache_key("m", "1", json_request(BASE))


def test_the_same_tensor_sent_as_json_or_binary_has_the_same_key() -> None:
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    tensor = httpclient.InferInput("x", [2, 3], "FP32")
    tensor.set_data_from_numpy(array, binary_data=True)
    raw, json_size = httpclient.InferenceServerClient.generate_request_body([tensor])
    binary = parse_infer_request(raw, str(json_size))
    assert cache_key("m", "1", binary) == cache_key("m", "1", json_request(BASE))


def test_input_order_and_requested_outputs_do_not_change_the_key() -> None:
    other = ("ids", "INT64", [2], [7, 8])
    first = json_request(BASE, other)
    second = json_request(other, BASE, outputs=[{"name": "y", "parameters": {"binary_data": True}}])
    # the cache holds every output of a request; which ones are sent is decided afterwards
    assert cache_key("m", "1", first) == cache_key("m", "1", second)


@pytest.mark.parametrize(
    ("model", "version", "inputs"),
    [
        pytest.param("other", "1", [BASE], id="model"),
        pytest.param("m", "2", [BASE], id="version"),
        pytest.param("m1", "", [BASE], id="model-version-boundary"),
        pytest.param("m", "1", [("x", "FP32", [2, 3], [0.0, 1.0, 2.0, 3.0, 4.0, 5.5])], id="data"),
        pytest.param("m", "1", [("x", "FP32", [3, 2], BASE[3])], id="shape"),
        pytest.param("m", "1", [("x", "FP32", [6], BASE[3])], id="rank"),
        pytest.param("m", "1", [("y", "FP32", [2, 3], BASE[3])], id="name"),
        pytest.param("m", "1", [BASE, ("z", "INT8", [1], [0])], id="extra-input"),
    ],
)
def test_keys_differ_when_anything_that_decides_the_outputs_differs(
    model: str, version: str, inputs: list[tuple[str, str, list[int], list[Any]]]
) -> None:
    assert cache_key(model, version, json_request(*inputs)) != cache_key(
        "m", "1", json_request(BASE)
    )


def test_keys_differ_by_datatype_even_when_the_bytes_are_equal() -> None:
    as_float = json_request(("x", "FP32", [2], [0.0, 0.0]))
    as_int = json_request(("x", "INT32", [2], [0, 0]))
    assert as_float.inputs["x"].raw() == as_int.inputs["x"].raw()
    assert cache_key("m", "1", as_float) != cache_key("m", "1", as_int)


def test_keys_differ_where_bytes_elements_split_differently() -> None:
    one = json_request(("t", "BYTES", [2], ["ab", "c"]))
    two = json_request(("t", "BYTES", [2], ["a", "bc"]))
    assert cache_key("m", "1", one) != cache_key("m", "1", two)
