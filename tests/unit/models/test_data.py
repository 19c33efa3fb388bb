"""Evaluation data: ``--data`` archives checked against a signature, and synthesized inputs."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from inferno.errors import DataMismatchError, UserInputError
from inferno.models.data import (
    OTHER_DIM,
    SYNTHETIC_SOURCE,
    label_indices,
    load_npz,
    read_arrays,
    synthesize,
)
from inferno.models.signature import Signature, TensorSpec

PIXELS = TensorSpec("pixels", "float32", ("batch", 1, 8, 8))
IDS = TensorSpec("input_ids", "int64", ("batch", "sequence"))
MASK = TensorSpec("attention_mask", "int64", ("batch", "sequence"))
IMAGE = Signature((PIXELS,), (TensorSpec("probabilities", "float32", ("batch", 10)),))
TEXT = Signature((IDS, MASK), (TensorSpec("embedding", "float32", ("batch", 8)),))


def _npz(tmp_path: Path, name: str = "x.npz", **arrays: np.ndarray) -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def _pixels(n: int = 10, dtype: type = np.float32) -> np.ndarray:
    return np.random.default_rng(0).random((n, 1, 8, 8)).astype(dtype)


# --- load_npz: what fits ---------------------------------------------------------------


def test_loads_inputs_and_labels(tmp_path: Path) -> None:
    path = _npz(tmp_path, pixels=_pixels(), labels=np.arange(10))
    data = load_npz(path, IMAGE)
    assert isinstance(data.samples, dict)
    assert data.samples["pixels"].dtype == np.float32
    assert len(data) == 10
    assert data.labels is not None and data.labels.tolist() == list(range(10))
    assert data.source == "--data x.npz"
    assert not data.synthetic


def test_labels_are_optional(tmp_path: Path) -> None:
    data = load_npz(_npz(tmp_path, pixels=_pixels()), IMAGE)
    assert data.labels is None


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int32, np.uint8, np.bool_])
def test_casts_to_float_from_any_numeric(tmp_path: Path, dtype: type) -> None:
    data = load_npz(_npz(tmp_path, pixels=_pixels(dtype=dtype)), IMAGE)
    assert isinstance(data.samples, dict)
    assert data.samples["pixels"].dtype == np.float32


def test_casts_between_integer_types_and_whole_floats(tmp_path: Path) -> None:
    ids = np.arange(12, dtype=np.int32).reshape(3, 4)
    mask = np.ones((3, 4), dtype=np.float64)  # whole numbers: exact as int64
    data = load_npz(_npz(tmp_path, input_ids=ids, attention_mask=mask), TEXT)
    assert isinstance(data.samples, dict)
    assert data.samples["input_ids"].dtype == np.int64
    assert data.samples["attention_mask"].dtype == np.int64
    assert list(data.samples) == ["input_ids", "attention_mask"]  # signature order


# --- load_npz: what does not, with the message naming it -------------------------------


def test_wrong_shape_names_input_expected_and_found(tmp_path: Path) -> None:
    path = _npz(tmp_path, pixels=np.zeros((10, 64), np.float32))
    with pytest.raises(DataMismatchError) as info:
        load_npz(path, IMAGE)
    assert str(info.value) == (
        f"--data {path}: input 'pixels': expected float32 [batch, 1, 8, 8], got float32 [10, 64]"
    )


def test_wrong_fixed_dim(tmp_path: Path) -> None:
    path = _npz(tmp_path, pixels=np.zeros((10, 1, 8, 7), np.float32))
    with pytest.raises(DataMismatchError, match=r"got float32 \[10, 1, 8, 7\]"):
        load_npz(path, IMAGE)


@pytest.mark.parametrize(
    ("array", "found"),
    [
        (np.full((2, 3), 1.5), "float64"),  # fractions
        (np.full((2, 3), np.nan), "float64"),  # NaN has no integer
        (np.full((2, 3), np.inf), "float64"),  # neither has infinity
        (np.array([["a", "b", "c"]] * 2), "<U1"),  # strings never convert
    ],
    ids=["fraction", "nan", "inf", "strings"],
)
def test_lossy_casts_to_integers_are_refused(tmp_path: Path, array: np.ndarray,
                                             found: str) -> None:
    path = _npz(tmp_path, input_ids=array, attention_mask=np.ones((2, 3), np.int64))
    with pytest.raises(DataMismatchError, match=rf"input 'input_ids': expected int64 .*got {found}"):
        load_npz(path, TEXT)


def test_overflowing_cast_is_refused(tmp_path: Path) -> None:
    spec = TensorSpec("ids", "int32", ("batch",))
    path = _npz(tmp_path, ids=np.array([1, 2**40], dtype=np.int64))
    with pytest.raises(DataMismatchError, match="do not convert to int32 exactly"):
        load_npz(path, Signature((spec,), ()))


def test_missing_and_unknown_arrays_are_both_named(tmp_path: Path) -> None:
    path = _npz(tmp_path, image=_pixels())
    with pytest.raises(DataMismatchError, match=r"missing \['pixels'\]; unknown \['image'\]"):
        load_npz(path, IMAGE)


def test_inconsistent_batch_lengths(tmp_path: Path) -> None:
    path = _npz(tmp_path, input_ids=np.zeros((3, 4), np.int64),
                attention_mask=np.zeros((5, 4), np.int64))
    with pytest.raises(DataMismatchError,
                       match="inconsistent batch length: input 'input_ids' has 3, "
                             "input 'attention_mask' has 5"):
        load_npz(path, TEXT)


def test_inconsistent_named_axis(tmp_path: Path) -> None:
    path = _npz(tmp_path, input_ids=np.zeros((3, 4), np.int64),
                attention_mask=np.zeros((3, 6), np.int64))
    with pytest.raises(DataMismatchError, match="inconsistent 'sequence'"):
        load_npz(path, TEXT)


@pytest.mark.parametrize(("labels", "found"), [(np.arange(9), "9 rows"), (np.array(3), "a scalar")])
def test_labels_length_mismatch(tmp_path: Path, labels: np.ndarray, found: str) -> None:
    path = _npz(tmp_path, pixels=_pixels(10), labels=labels)
    with pytest.raises(DataMismatchError, match=f"'labels': expected one per sample .10 rows., got {found}"):
        load_npz(path, IMAGE)


def test_no_samples(tmp_path: Path) -> None:
    path = _npz(tmp_path, pixels=_pixels(0))
    with pytest.raises(DataMismatchError, match="at least one sample, got 0"):
        load_npz(path, IMAGE)


# --- load_npz: the file itself ---------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match=r"--data .*nope\.npz: file does not exist"):
        load_npz(tmp_path / "nope.npz", IMAGE)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="file is a directory"):
        load_npz(tmp_path, IMAGE)


def test_text_file(tmp_path: Path) -> None:
    path = tmp_path / "x.npz"
    path.write_text("pixels,labels\n1,2\n")
    with pytest.raises(UserInputError, match=r"expected an \.npz archive .*not a zip archive"):
        load_npz(path, IMAGE)


def test_single_npy_array(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, _pixels())
    with pytest.raises(UserInputError, match=r"got a single \.npy array"):
        load_npz(path, IMAGE)


def test_truncated_archive(tmp_path: Path) -> None:
    path = _npz(tmp_path, pixels=_pixels())
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(UserInputError, match="cannot be read"):
        load_npz(path, IMAGE)


def test_pickled_object_array_is_not_unpickled(tmp_path: Path) -> None:
    path = _npz(tmp_path, pixels=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(UserInputError, match="cannot be read"):
        load_npz(path, IMAGE)


def test_mismatch_errors_are_user_input_errors() -> None:
    assert issubclass(DataMismatchError, UserInputError)  # both answer 400 / exit code 2


def test_read_arrays_returns_every_array(tmp_path: Path) -> None:
    arrays = read_arrays(_npz(tmp_path, a=np.zeros(2), b=np.ones(3)))
    assert sorted(arrays) == ["a", "b"]
    assert zipfile.is_zipfile(tmp_path / "x.npz")


# --- label_indices ---------------------------------------------------------------------


def test_label_indices_maps_class_values_to_columns() -> None:
    classes = np.array(["high", "low", "mid"])
    indices = label_indices(np.array(["mid", "high", "low", "mid"]), classes, "--data d.npz")
    assert indices.tolist() == [2, 0, 1, 2]
    assert label_indices(np.array([3.0, 7.0]), np.array([3, 7]), "x").tolist() == [0, 1]


def test_label_indices_names_unknown_labels() -> None:
    with pytest.raises(DataMismatchError, match=r"expected values among the classes \[0, 1\], got \['5'\]"):
        label_indices(np.array([0, 5]), np.array([0, 1]), "--data d.npz")


# --- synthesize ------------------------------------------------------------------------


def test_synthesize_shapes_dtypes_and_source() -> None:
    sig = Signature(
        (
            TensorSpec("x", "float32", ("batch", 3, "width")),
            TensorSpec("h", "float16", (2, "batch_size"), batch_axis=1),
            TensorSpec("n", "int32", ("batch",)),
            TensorSpec("flag", "bool", ("batch", 1)),
        ),
        (),
    )
    data = synthesize(sig, n=5)
    assert isinstance(data.samples, dict)
    shapes = {k: (v.shape, v.dtype.name) for k, v in data.samples.items()}
    assert shapes == {
        "x": ((5, 3, OTHER_DIM), "float32"),
        "h": ((5, 2), "float16"),  # samples hold rows first, wherever the graph's batch axis is
        "n": ((5,), "int32"),
        "flag": ((5, 1), "bool"),
    }
    assert data.synthetic and data.source == SYNTHETIC_SOURCE and data.labels is None
    assert data.samples["n"].min() >= 0 and data.samples["n"].max() < 100


def test_synthesize_text_inputs_are_a_valid_batch() -> None:
    sig = Signature((IDS, MASK, TensorSpec("token_type_ids", "int64", ("batch", "sequence"))), ())
    data = synthesize(sig, n=4)
    assert isinstance(data.samples, dict)
    assert data.samples["input_ids"].shape == (4, OTHER_DIM)
    assert (data.samples["attention_mask"] == 1).all()
    assert (data.samples["token_type_ids"] == 0).all()


def test_synthesize_is_seeded() -> None:
    first, again, other = synthesize(IMAGE, seed=1), synthesize(IMAGE, seed=1), synthesize(IMAGE, seed=2)
    assert isinstance(first.samples, dict) and isinstance(again.samples, dict)
    assert isinstance(other.samples, dict)
    assert np.array_equal(first.samples["pixels"], again.samples["pixels"])
    assert not np.array_equal(first.samples["pixels"], other.samples["pixels"])


def test_synthesize_refuses_strings() -> None:
    sig = Signature((TensorSpec("text", "object", ("batch",)),), ())
    with pytest.raises(DataMismatchError, match="cannot synthesize object"):
        synthesize(sig)
