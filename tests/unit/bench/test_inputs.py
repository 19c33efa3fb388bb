from pathlib import Path

import numpy as np
import orjson
import pytest

from inferno.bench.inputs import (
    POOL_SIZE,
    build_pool,
    bundled_sentences,
    concrete_shape,
    synthesize,
)
from inferno.bench.metadata import parse_metadata
from inferno.errors import DataMismatchError, UserInputError
from inferno.protocol.metadata import TensorSpec, model_path

METADATA = {
    "name": "tiny",
    "versions": ["1"],
    "platform": "onnxruntime_onnx",
    "inputs": [
        {"name": "pixels", "datatype": "FP32", "shape": [-1, 1, 4, 4]},
        {"name": "input_ids", "datatype": "INT64", "shape": [-1, -1]},
        {"name": "attention_mask", "datatype": "INT64", "shape": [-1, -1]},
        {"name": "flag", "datatype": "BOOL", "shape": [3]},
        {"name": "half", "datatype": "FP16", "shape": [-1, 2]},
        {"name": "text", "datatype": "BYTES", "shape": [-1]},
    ],
    "outputs": [{"name": "out", "datatype": "FP32", "shape": [-1, 10]}],
}
SPECS = parse_metadata(METADATA, "tiny")


def _decode(body: bytes) -> dict[str, dict[str, object]]:
    return {t["name"]: t for t in orjson.loads(body)["inputs"]}


def test_parse_metadata() -> None:
    assert [s.name for s in SPECS] == [i["name"] for i in METADATA["inputs"]]
    assert SPECS[0] == TensorSpec("pixels", "FP32", (-1, 1, 4, 4))
    with pytest.raises(UserInputError, match="no inputs"):
        parse_metadata({"name": "x", "inputs": []}, "x")
    with pytest.raises(UserInputError, match="malformed"):
        parse_metadata({"inputs": [{"name": "a", "shape": [1]}]}, "x")
    with pytest.raises(DataMismatchError, match=r"'a'.*COMPLEX64"):
        parse_metadata({"inputs": [{"name": "a", "datatype": "COMPLEX64", "shape": [1]}]}, "x")


def test_metadata_path_quotes_names() -> None:
    assert model_path("digits", None) == "/v2/models/digits"
    assert model_path("a/b c", "2") == "/v2/models/a%2Fb%20c/versions/2"


def test_variable_dims() -> None:
    pixels, ids, _mask, flag, _half, text = SPECS
    assert concrete_shape(pixels, 1) == [1, 1, 4, 4]
    assert concrete_shape(pixels, 8) == [8, 1, 4, 4]
    assert concrete_shape(ids, 2) == [2, 16]
    assert concrete_shape(flag, 8) == [3]  # no variable dimension: taken as it is
    assert concrete_shape(text, 4) == [4]
    assert concrete_shape(TensorSpec("t", "BYTES", (-1, -1)), 2) == [2, 1]


def test_synthesized_values_fit_each_dtype() -> None:
    rng = np.random.default_rng(0)
    sentences = ["one", "two", "three"]
    arrays = {s.name: synthesize(s, 2, rng, sentences) for s in SPECS}
    assert arrays["pixels"].dtype == np.float32 and arrays["pixels"].shape == (2, 1, 4, 4)
    ids = arrays["input_ids"]
    assert ids.dtype == np.int64 and ids.shape == (2, 16)
    assert ids.min() >= 0 and ids.max() <= 100
    assert (arrays["attention_mask"] == 1).all()
    assert arrays["flag"].dtype == np.bool_ and arrays["flag"].shape == (3,)
    assert arrays["half"].dtype == np.float16
    assert arrays["text"].tolist() == ["one", "two"]


def test_pool_bodies_follow_the_metadata() -> None:
    pool = build_pool(SPECS, batch=2, seed=0)
    assert len(pool.bodies) >= POOL_SIZE
    tensors = _decode(pool.bodies[0])
    for spec in SPECS:
        tensor = tensors[spec.name]
        assert tensor["datatype"] == spec.datatype
        shape = tensor["shape"]
        assert isinstance(shape, list)
        assert shape == concrete_shape(spec, 2)
        data = tensor["data"]
        assert isinstance(data, list) and len(data) == int(np.prod(shape))
    assert all(isinstance(v, str) for v in tensors["text"]["data"])  # type: ignore[union-attr]
    assert all(isinstance(v, bool) for v in tensors["flag"]["data"])  # type: ignore[union-attr]
    assert "minilm_sentences.txt" in pool.description
    assert build_pool(SPECS, batch=2, seed=0).bodies == pool.bodies  # seeded
    assert build_pool(SPECS, batch=2, seed=1).bodies != pool.bodies


def test_text_model_cycles_through_every_sentence() -> None:
    specs = (TensorSpec("text", "BYTES", (-1,)),)
    pool = build_pool(specs, batch=1)
    sent = [_decode(b)["text"]["data"][0] for b in pool.bodies]  # type: ignore[index]
    assert sent == bundled_sentences()


def test_text_file(tmp_path: Path) -> None:
    path = tmp_path / "lines.txt"
    path.write_text("alpha\n\nbeta\ngamma\n", encoding="utf-8")
    specs = (TensorSpec("text", "BYTES", (-1,)),)
    pool = build_pool(specs, batch=2, text=path)
    first = _decode(pool.bodies[0])["text"]
    assert first["data"] == ["alpha", "beta"] and first["shape"] == [2]
    assert "lines.txt (3 lines)" in pool.description


def test_text_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    text_specs = (TensorSpec("text", "BYTES", (-1,)),)
    with pytest.raises(UserInputError, match=r"empty\.txt.*no text"):
        build_pool(text_specs, batch=1, text=empty)
    with pytest.raises(UserInputError, match=r"missing\.txt"):
        build_pool(text_specs, batch=1, text=tmp_path / "missing.txt")
    with pytest.raises(DataMismatchError, match="no BYTES input"):
        build_pool((SPECS[0],), batch=1, text=empty)


def test_npz_rows_per_request(tmp_path: Path) -> None:
    path = tmp_path / "eval.npz"
    pixels = np.arange(10 * 16, dtype=np.float64).reshape(10, 1, 4, 4)
    np.savez(path, pixels=pixels, labels=np.arange(10))
    pool = build_pool((SPECS[0],), batch=3, data=path)
    assert len(pool.bodies) == 3  # 10 samples // 3 rows
    second = _decode(pool.bodies[1])["pixels"]
    assert second["shape"] == [3, 1, 4, 4]
    assert second["data"] == pixels[3:6].ravel().tolist()
    assert "eval.npz (10 samples)" in pool.description


@pytest.mark.parametrize(
    ("arrays", "batch", "fragment"),
    [
        ({"other": np.zeros((4, 1, 4, 4), np.float32)}, 1, r"no array for input\(s\) \['pixels'\]"),
        ({"pixels": np.zeros((4, 1, 5, 5), np.float32)}, 1, r"'pixels'.*float32 \[4, 1, 5, 5\]"),
        ({"pixels": np.zeros((4, 16), np.float32)}, 1, r"'pixels'.*float32 \[4, 16\]"),
        ({"pixels": np.zeros((4, 1, 4, 4), np.complex64)}, 1, r"'pixels'.*complex64"),
        ({"pixels": np.zeros((2, 1, 4, 4), np.float32)}, 3, r"2 samples, but --batch 3"),
    ],
)
def test_npz_mismatch_names_the_file(
    tmp_path: Path, arrays: dict[str, np.ndarray], batch: int, fragment: str
) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    with pytest.raises(DataMismatchError, match=fragment) as info:
        build_pool((SPECS[0],), batch=batch, data=path)
    assert "bad.npz" in str(info.value)


def test_npz_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "junk.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(UserInputError, match=r"junk\.npz.*\.npz archive"):
        build_pool((SPECS[0],), batch=1, data=path)
    with pytest.raises(UserInputError, match=r"absent\.npz"):
        build_pool((SPECS[0],), batch=1, data=tmp_path / "absent.npz")


def test_binary_bodies_parse_as_the_server_reads_them() -> None:
    from inferno.serving.protocol import parse_infer_request

    pool = build_pool(SPECS, batch=2, seed=0)
    body, header_length = pool.binary_bodies()[0]
    request = parse_infer_request(body, str(header_length))
    assert request.binary_output  # outputs asked in binary as well
    for spec in SPECS:
        sent = pool.samples[0][spec.name]
        got = request.inputs[spec.name].data
        assert list(got.shape) == list(sent.shape), spec.name
        if spec.datatype == "BYTES":
            assert [v.decode() if isinstance(v, bytes) else v for v in got.ravel()] == list(
                sent.ravel()
            )
        else:
            np.testing.assert_array_equal(got, sent)
