"""Request bodies for the load generator, encoded once before timing starts.

Bodies come from the user's evaluation data (``--data`` .npz, ``--text`` lines), from the
bundled sentences for a text model, or are synthesized from the model's metadata. They are
encoded once before timing starts (JSON, Triton's binary tensor extension, or raw tensor bytes
for gRPC) and cycled through, so a request costs the generator almost nothing.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inferno.errors import DataMismatchError, UserInputError
from inferno.models.zoo.minilm import sentences as bundled_sentences
from inferno.protocol.codec import encode_request
from inferno.protocol.datatypes import value_dtype
from inferno.protocol.metadata import TensorSpec

POOL_SIZE = 64
"""Distinct synthesized bodies, cycled through."""

MAX_POOL = 1024
"""At most this many bodies from real data (the rest is not needed to load a server)."""

VARIABLE_DIM = 16
"""Size given to a variable (-1) dimension other than the first."""


@dataclass(frozen=True)
class RequestPool:
    """The inputs of each request, and a line saying where they came from."""

    specs: tuple[TensorSpec, ...]
    samples: tuple[dict[str, np.ndarray], ...]
    """One ``{input name: array}`` per request, cycled through."""
    description: str

    @property
    def bodies(self) -> tuple[bytes, ...]:
        """The samples as JSON infer bodies."""
        return tuple(encode(self.specs, arrays) for arrays in self.samples)

    def binary_bodies(self) -> tuple[tuple[bytes, int], ...]:
        """The samples in Triton's binary tensor extension: ``(body, JSON header length)``."""
        return tuple(encode_binary(self.specs, arrays) for arrays in self.samples)


def concrete_shape(spec: TensorSpec, batch: int) -> list[int]:
    """The request shape: a variable first dimension is ``batch``; others are 16 (1 for text)."""
    other = 1 if spec.datatype == "BYTES" else VARIABLE_DIM
    return [(batch if i == 0 else other) if d < 0 else d for i, d in enumerate(spec.shape)]


def synthesize(
    spec: TensorSpec, batch: int, rng: np.random.Generator, sentences: list[str], start: int = 0
) -> np.ndarray:
    """Random values of the right dtype and shape, in a range any model accepts.

    Integers are 0..100 (valid token ids and class indices), except ``*mask*`` inputs (ones)
    and ``*type*`` inputs (zeros); floats are standard normal; BYTES are ``sentences`` in
    order from index ``start``.
    """
    shape = concrete_shape(spec, batch)
    size = int(np.prod(shape))
    if spec.datatype == "BYTES":
        picked = [sentences[(start + i) % len(sentences)] for i in range(size)]
        return np.array(picked, dtype=object).reshape(shape)
    dtype = value_dtype(spec.datatype)
    lowered = spec.name.lower()
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(bool)
    if dtype.kind in "iu":
        if "mask" in lowered:
            return np.ones(shape, dtype)
        if "type" in lowered:
            return np.zeros(shape, dtype)
        return rng.integers(0, 101, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def encode(specs: tuple[TensorSpec, ...], arrays: dict[str, np.ndarray]) -> bytes:
    """One infer request body: ``{"inputs": [{name, datatype, shape, data (flat)}]}``."""
    body, _ = encode_request((s.name, s.datatype, arrays[s.name]) for s in specs)
    return body


def encode_binary(specs: tuple[TensorSpec, ...], arrays: dict[str, np.ndarray]) -> tuple[bytes, int]:
    """One body in Triton's binary tensor extension, and its JSON header's length.

    The header lists each input with ``parameters.binary_data_size`` and asks for every output
    in binary (``binary_data_output``), as ``tritonclient`` does with ``binary_data=True``.
    """
    return encode_request(((s.name, s.datatype, arrays[s.name]) for s in specs), binary=True, binary_output=True)


def read_text(path: Path) -> list[str]:
    """Non-empty lines of ``--text``.

    Raises:
        UserInputError: the file cannot be read or has no line.
    """
    try:
        lines = [line.strip() for line in path.read_text("utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"--text {path}: cannot read it as UTF-8 text: {exc}") from exc
    if not lines:
        raise UserInputError(f"--text {path}: expected one string per line, found no text")
    return lines


def read_npz(path: Path, specs: tuple[TensorSpec, ...]) -> dict[str, np.ndarray]:
    """The arrays of ``--data`` named like the inputs (other arrays, e.g. labels, are ignored).

    Raises:
        UserInputError: the file is missing or not an .npz.
        DataMismatchError: an input is missing, or an array does not fit its input.
    """
    try:
        with np.load(path, allow_pickle=False) as npz:
            found = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise UserInputError(f"--data {path}: cannot read it as an .npz archive: {exc}") from exc
    missing = [s.name for s in specs if s.name not in found]
    if missing:
        raise DataMismatchError(
            f"--data {path}: no array for input(s) {missing}; "
            f"expected arrays named {[s.name for s in specs]}, found {sorted(found)}"
        )
    arrays = {}
    for spec in specs:
        arrays[spec.name] = _fit(path, spec, found[spec.name])
    counts = {len(a) for a in arrays.values()}
    if len(counts) > 1:
        raise DataMismatchError(
            f"--data {path}: arrays have different sample counts "
            f"{ {k: len(v) for k, v in arrays.items()} }"
        )
    return arrays


def _fit(path: Path, spec: TensorSpec, array: np.ndarray) -> np.ndarray:
    found = f"{array.dtype} {list(array.shape)}"
    expected = f"expected {spec.datatype} [samples, ...] matching {list(spec.shape)}"
    if (
        array.ndim == 0
        or array.ndim != max(len(spec.shape), 1)
        or any(d >= 0 and d != s for d, s in zip(spec.shape[1:], array.shape[1:], strict=False))
    ):
        raise DataMismatchError(f"--data {path}: input {spec.name!r}: {expected}, got {found}")
    if spec.datatype == "BYTES":
        if array.dtype.kind not in "USO":
            raise DataMismatchError(f"--data {path}: input {spec.name!r}: {expected}, got {found}")
        return array.astype(object)
    target = value_dtype(spec.datatype)
    if not np.can_cast(array.dtype, target, casting="same_kind"):
        raise DataMismatchError(f"--data {path}: input {spec.name!r}: {expected}, got {found}")
    return array.astype(target, copy=False)


def build_pool(
    specs: tuple[TensorSpec, ...],
    *,
    batch: int,
    data: Path | None = None,
    text: Path | None = None,
    seed: int = 0,
) -> RequestPool:
    """The inputs the generator cycles through, one sample per request.

    Real rows come from ``data`` (``batch`` consecutive samples per request) and ``text``;
    inputs they do not cover are synthesized; BYTES inputs default to the bundled sentences.

    Raises:
        UserInputError, DataMismatchError: naming the file and what does not fit.
    """
    text_inputs = [s for s in specs if s.datatype == "BYTES"]
    if text is not None and not text_inputs:
        raise DataMismatchError(
            f"--text {text}: model has no BYTES input to send text to; "
            f"its inputs are {[f'{s.name} {s.describe()}' for s in specs]}"
        )
    sentences = read_text(text) if text is not None else bundled_sentences()  # minilm's evaluation text
    real = read_npz(data, specs) if data is not None else {}
    rng = np.random.default_rng(seed)
    if real:
        samples = len(next(iter(real.values())))
        if samples < batch:
            raise DataMismatchError(
                f"--data {data}: {samples} samples, but --batch {batch} needs at least {batch}"
            )
        count = min(samples // batch, MAX_POOL)
        chunks = [
            {k: v[i * batch : (i + 1) * batch] for k, v in real.items()} for i in range(count)
        ]
        source = f"{data.name if data else ''} ({samples} samples)"
    else:
        # Text: every sentence once (up to MAX_POOL bodies), as the evaluation data would be.
        count = min(max(POOL_SIZE, len(sentences) // batch if text_inputs else 0), MAX_POOL)
        chunks = [{} for _ in range(count)]
        source = "synthesized from the metadata"
    requests = []
    for i, chunk in enumerate(chunks):
        arrays = {
            s.name: chunk[s.name]
            if s.name in chunk
            else synthesize(s, batch, rng, sentences, start=i * batch)
            for s in specs
        }
        requests.append(arrays)
    if text_inputs and not real:
        source = (
            f"text from {text.name if text else 'minilm_sentences.txt'} ({len(sentences)} lines)"
        )
        if len(text_inputs) < len(specs):
            source += ", other inputs synthesized"
    shapes = "; ".join(f"{s.name} {s.describe()}" for s in specs)
    return RequestPool(specs, tuple(requests), f"{shapes} — batch {batch}, {source}")
