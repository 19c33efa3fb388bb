"""Evaluation data for imported models: a user's ``.npz`` file, or samples synthesized from the signature.

An ``.npz`` (``numpy.savez``) holds one array per model input, named like the input, and
optionally ``labels``. Arrays are checked against the signature: every input present and no
unknown array, the rank and every fixed dimension as declared, one batch length shared by all
arrays (and by every axis that shares a symbolic name), and a dtype that converts to the
input's dtype without losing anything. Floating-point inputs also take any integer or wider
float array (float64 → float32 rounds, which is what a user saving with numpy's default means).

Arrays are in the graph's layout (``state [2, batch, 128]`` as the model takes it, a scalar
``sr`` as a 0-d array); the samples they become hold rows first (``model.as_rows``).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from inferno.errors import DataMismatchError, UserInputError
from inferno.models.model import EvalData, as_rows, tensor_preprocessor
from inferno.models.shapes import RATE_NAMES, SAMPLE_RATES, Shapes
from inferno.models.signature import Signature, TensorSpec, is_anonymous

LABELS = "labels"
SYNTHETIC_SOURCE = "synthesized from the signature (fidelity = agreement with FP32 outputs)"
OTHER_DIM = 16
"""The size given to symbolic axes other than the batch axis (sequence length, ...)."""
INT_HIGH = 100
"""Synthesized integers are drawn from ``[0, INT_HIGH)``: valid ids for any vocabulary."""
SYNTHETIC_ELEMENTS = 2**23
"""Most elements synthesized for one model (32 MiB of float32): 27 rows of a 320×320 image."""

_NUMERIC_KINDS = "biuf"


def load_npz(path: Path, signature: Signature) -> EvalData:
    """Read ``--data FILE.npz`` and check it against ``signature``.

    Args:
        path: the archive; arrays named like the model's inputs, plus optional ``labels``.
        signature: the model's inputs, which every array must fit.

    Returns:
        EvalData whose samples hold one array per input, in signature order, cast to the
        input dtypes; ``labels`` when the file has them.

    Raises:
        UserInputError: the file is missing, unreadable or not an ``.npz`` archive.
        DataMismatchError: an array is missing, unknown, or does not fit its input
            (dtype, rank, fixed dims, batch length), or ``labels`` has another length.
    """
    where = f"--data {path}"
    arrays = read_arrays(path)
    expected = [*signature.input_names, LABELS]
    missing = [name for name in signature.input_names if name not in arrays]
    unknown = sorted(set(arrays) - set(expected))
    if missing or unknown:
        raise DataMismatchError(
            f"{where}: expected arrays {expected} ('{LABELS}' optional), got {sorted(arrays)}"
            + (f"; missing {missing}" if missing else "")
            + (f"; unknown {unknown}" if unknown else "")
        )
    samples = {spec.name: _fit(arrays[spec.name], spec, where) for spec in signature.inputs}
    _check_shared_dims(signature, samples, where)
    count = signature.rows(samples)
    if count == 0:
        raise DataMismatchError(f"{where}: expected at least one sample, got 0")
    labels = arrays.get(LABELS)
    if labels is not None and (labels.ndim == 0 or len(labels) != count):
        found = "a scalar" if labels.ndim == 0 else f"{len(labels)} rows"
        raise DataMismatchError(
            f"{where}: '{LABELS}': expected one per sample ({count} rows), got {found}"
        )
    rows = {spec.name: as_rows(samples[spec.name], spec.batch_axis, count)
            for spec in signature.inputs}
    return EvalData(rows, labels=labels, source=f"--data {path.name}")


def call_shapes(signature: Signature, rows: dict[str, np.ndarray]) -> Shapes:
    """One call's shape per input at batch 1 (graph layout), read off rows-first samples."""
    shapes: Shapes = {}
    for spec in signature.inputs:
        row = tuple(int(d) for d in rows[spec.name].shape[1:])
        axis = spec.batch_axis
        shapes[spec.name] = row if axis is None else (*row[:axis], 1, *row[axis:])
    return shapes


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` archive, by name, unchecked.

    Raises:
        UserInputError: the file is missing, unreadable or not an ``.npz`` archive.
    """
    where = f"--data {path}"
    if not path.is_file():
        reason = "is a directory" if path.is_dir() else "does not exist"
        raise UserInputError(f"{where}: file {reason}")
    expected = "expected an .npz archive (numpy.savez) of arrays named like the inputs"
    try:
        with path.open("rb") as f:
            magic = f.read(6)
        if magic.startswith(b"\x93NUMPY"):
            raise UserInputError(f"{where}: {expected}, got a single .npy array")
        if not magic.startswith(b"PK"):
            raise UserInputError(f"{where}: {expected}, got a file that is not a zip archive")
        with np.load(path, allow_pickle=False) as loaded:
            return {name: loaded[name] for name in loaded.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise UserInputError(f"{where}: {expected}, but it cannot be read: {exc}") from exc


def _fit(array: np.ndarray, spec: TensorSpec, where: str) -> np.ndarray:
    """Check rank and fixed dims, then cast losslessly to the input's dtype."""
    found = f"{array.dtype} {list(array.shape)}"
    mismatch = DataMismatchError(
        f"{where}: input {spec.name!r}: expected {spec.describe()}, got {found}"
    )
    if array.ndim != len(spec.shape) or any(
        isinstance(d, int) and d != s for d, s in zip(spec.shape, array.shape, strict=True)
    ):
        raise mismatch
    target = np.dtype(spec.dtype)
    if array.dtype == target:
        return array
    if array.dtype.kind not in _NUMERIC_KINDS or target.kind not in _NUMERIC_KINDS:
        raise mismatch
    if target.kind == "f":
        return array.astype(target)
    with np.errstate(invalid="ignore", over="ignore"):
        cast = array.astype(target)
        lossless = np.array_equal(cast.astype(array.dtype), array)
    if not lossless:
        raise DataMismatchError(f"{mismatch}: the values do not convert to {target} exactly")
    return cast


def _check_shared_dims(signature: Signature, samples: dict[str, np.ndarray], where: str) -> None:
    """Every array has the same batch length, and a named axis means one size (axes the graph
    leaves unnamed, ``?``, are each their own)."""
    seen: dict[str, tuple[int, str]] = {}
    for spec in signature.inputs:
        shape = samples[spec.name].shape
        batch = spec.batch_axis
        named = [("batch length", shape[batch])] if batch is not None else []
        named += [(repr(d), s) for i, (d, s) in enumerate(zip(spec.shape, shape, strict=True))
                  if isinstance(d, str) and i != batch and not is_anonymous(d)]
        for axis, size in named:
            first = seen.setdefault(axis, (size, spec.name))
            if first[0] != size:
                raise DataMismatchError(
                    f"{where}: inconsistent {axis}: input {first[1]!r} has {first[0]}, "
                    f"input {spec.name!r} has {size}"
                )


def label_indices(labels: np.ndarray, classes: Any, where: str) -> np.ndarray:
    """Labels given as class values (a classifier's ``classes_``) → indices into ``classes``.

    Raises:
        DataMismatchError: a label is not one of the classes.
    """
    classes = np.asarray(classes).tolist()
    index = {value: i for i, value in enumerate(classes)}
    values = labels.reshape(-1).tolist()
    unknown = sorted({str(v) for v in values if v not in index})
    if unknown:
        raise DataMismatchError(
            f"{where}: '{LABELS}': expected values among the classes {classes}, got {unknown[:5]}"
        )
    return np.array([index[v] for v in values], dtype=np.int64)


def synthesize(signature: Signature, n: int = 64, seed: int = 0,
               shapes: Shapes | None = None) -> EvalData:
    """Random inputs shaped like the signature, for models that came without data.

    Floats are standard normal, integers are drawn from ``[0, INT_HIGH)``, booleans are
    fair coin flips. Inputs named like an attention mask are all ones, token-type ids all
    zeros (text models see a valid, unpadded batch), and a scalar integer named like a sample
    rate holds 16000. ``shapes`` (one call at batch 1, see ``models.shapes``) sizes the
    dynamic axes; without it they get ``OTHER_DIM``. There are ``n`` rows, fewer for large
    rows (at most ``SYNTHETIC_ELEMENTS`` elements in all, at least 8 rows).

    Raises:
        DataMismatchError: an input has a dtype that cannot be synthesized (strings).
    """
    row_elements = sum(int(np.prod(_row_shape(s, shapes))) for s in signature.inputs)
    n = max(min(n, SYNTHETIC_ELEMENTS // max(row_elements, 1)), min(n, 8))
    return EvalData(synthetic_rows(signature, n, seed, shapes), source=SYNTHETIC_SOURCE,
                    synthetic=True)


def synthetic_rows(signature: Signature, n: int = 64, seed: int = 0,
                   shapes: Shapes | None = None) -> dict[str, np.ndarray]:
    """The samples of ``synthesize``: one array per input, ``n`` rows first."""
    rng = np.random.default_rng(seed)
    return {spec.name: _random(spec, n, rng, shapes) for spec in signature.inputs}


def synthetic_feeds(signature: Signature, n: int = 64, seed: int = 0,
                    shapes: Shapes | None = None) -> dict[str, np.ndarray]:
    """Feeds for one call of ``n`` rows, in the graph's layout (batch axes where it has them)."""
    return tensor_preprocessor(signature).encode(synthetic_rows(signature, n, seed, shapes))


def synthetic_feeds_at(signature: Signature, shapes: Shapes, rows: int) -> dict[str, np.ndarray]:
    """``synthetic_feeds`` at given sizes: what ``models.shapes.search`` tries a graph with."""
    return synthetic_feeds(signature, rows, 0, shapes)


def _row_shape(spec: TensorSpec, shapes: Shapes | None) -> tuple[int, ...]:
    """One row's shape: ``shapes`` where given, else fixed dims and ``OTHER_DIM``."""
    call = (shapes or {}).get(spec.name)
    if call is None:
        call = tuple(d if isinstance(d, int) else 1 if i == spec.batch_axis else OTHER_DIM
                     for i, d in enumerate(spec.shape))
    if spec.batch_axis is None:
        return tuple(call)
    return tuple(call[: spec.batch_axis]) + tuple(call[spec.batch_axis + 1 :])


def _random(spec: TensorSpec, n: int, rng: np.random.Generator,
            shapes: Shapes | None) -> np.ndarray:
    """``n`` rows for ``spec``; an input without a batch axis holds one value, repeated."""
    row = _row_shape(spec, shapes)
    if spec.batch_axis is None:
        return np.repeat(_values(spec, row, rng)[np.newaxis], n, axis=0)
    return _values(spec, (n, *row), rng)


def _values(spec: TensorSpec, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    dtype = np.dtype(spec.dtype)
    name = spec.name.lower()
    if dtype.kind in "iu" and "mask" in name:
        return np.ones(shape, dtype)
    if dtype.kind in "iu" and ("type_ids" in name or "segment" in name):
        return np.zeros(shape, dtype)
    if dtype.kind in "iu" and RATE_NAMES.search(name) and int(np.prod(shape)) == 1:
        return np.full(shape, SAMPLE_RATES[0], dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind in "iu":
        return rng.integers(0, INT_HIGH, shape).astype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    raise DataMismatchError(
        f"input {spec.name!r}: cannot synthesize {spec.describe()} data; "
        f"pass --data FILE.npz with an array named {spec.name!r}"
    )
