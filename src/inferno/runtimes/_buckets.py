"""Shape buckets for runtimes that compile (and capture) one program per input shape.

A compiled program with static shapes, and above all a captured CUDA graph, serves exactly
one shape. Serving sees every batch size from 1 to ``max_batch_size`` and, for text, every
sequence length: one program per exact shape would compile without end. Feeds are therefore
padded up to a few *buckets*:

- batch: the next power of two, at most ``max_batch`` (which is itself a bucket). Rows are
  independent in eval mode, so zero rows change nothing and are sliced off again. A batch
  over ``max_batch`` runs in chunks of ``max_batch`` rows.
- sequence (only for the inputs named as token sequences): the next multiple of
  ``multiple``, but never longer than the longest length seen so far. The runtime cannot
  know the model's position table; a length it has been given is one the model accepts, a
  longer one might not be. Padding is 0, which the attention mask (padded with 0 as well)
  masks out.

Everything here is numpy: the logic is tested without torch or a GPU.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class BucketKey:
    """One compiled program / captured graph: the padded shape and dtype of every input."""

    batch: int
    sequence: int | None
    """Padded sequence length; None for a model without sequence inputs."""
    inputs: tuple[tuple[str, tuple[int, ...], str], ...]
    """``(name, padded shape, numpy dtype string)`` per input, in feed order. Part of the key
    because inputs other than the bucketed axes may change shape too (another image size)."""

    @classmethod
    def of(cls, padded: Feeds, sequence: int | None) -> BucketKey:
        inputs = tuple((name, tuple(int(d) for d in a.shape), a.dtype.str) for name, a in padded.items())
        batch = inputs[0][1][0] if inputs else 0
        return cls(batch, sequence, inputs)


@dataclass(frozen=True)
class Piece:
    """Rows ``start:stop`` of the caller's batch, padded to the bucket ``key``."""

    start: int
    stop: int
    key: BucketKey
    feeds: Feeds

    @property
    def rows(self) -> int:
        return self.stop - self.start


def batch_buckets(max_batch: int) -> tuple[int, ...]:
    """Every batch bucket: the powers of two below ``max_batch``, then ``max_batch``."""
    _check_positive("max_batch", max_batch)
    sizes = [1 << i for i in range(max_batch.bit_length()) if 1 << i < max_batch]
    return (*sizes, max_batch)


def batch_bucket(n: int, max_batch: int) -> int:
    """The bucket for ``n`` rows: the next power of two, capped at ``max_batch``.

    Raises:
        ValueError: ``n`` is not in ``1..max_batch`` (split bigger batches with ``chunk_ranges``).
    """
    _check_positive("max_batch", max_batch)
    if not 1 <= n <= max_batch:
        raise ValueError(f"batch of {n} rows: expected 1..{max_batch}")
    return min(1 << (n - 1).bit_length(), max_batch)


def sequence_bucket(length: int, multiple: int, cap: int) -> int:
    """``length`` rounded up to a multiple of ``multiple``, but not beyond ``cap``.

    Raises:
        ValueError: ``length`` < 1, ``multiple`` < 1, or ``cap`` < ``length`` (the cap is
            the longest length seen, which includes this one).
    """
    _check_positive("sequence length", length)
    _check_positive("sequence multiple", multiple)
    if cap < length:
        raise ValueError(f"sequence cap {cap} is shorter than the sequence length {length}")
    return min(-(-length // multiple) * multiple, cap)


def chunk_ranges(rows: int, max_batch: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of consecutive chunks of at most ``max_batch`` rows covering ``rows``."""
    _check_positive("rows", rows)
    _check_positive("max_batch", max_batch)
    return [(start, min(start + max_batch, rows)) for start in range(0, rows, max_batch)]


def row_count(feeds: Feeds) -> int:
    """The batch size shared by every input (axis 0).

    Raises:
        ValueError: no inputs, a scalar input, an empty batch, or inputs that disagree.
    """
    if not feeds:
        raise ValueError("feeds: expected at least one input, got none")
    counts = {}
    for name, a in feeds.items():
        if a.ndim == 0:
            raise ValueError(f"input {name!r}: expected a batch axis, got a scalar")
        counts[name] = int(a.shape[0])
    rows = set(counts.values())
    if len(rows) != 1:
        raise ValueError(f"inputs disagree on the batch size (axis 0): {counts}")
    (n,) = rows
    if n < 1:
        raise ValueError("feeds: expected at least one row, got 0")
    return n


def sequence_length(feeds: Feeds, sequence_inputs: Collection[str]) -> int | None:
    """The longest axis-1 length among the sequence inputs present; None when there are none.

    Raises:
        ValueError: a sequence input with fewer than 2 axes or an empty sequence.
    """
    lengths = []
    for name in sequence_inputs:
        a = feeds.get(name)
        if a is None:
            continue
        if a.ndim < 2 or a.shape[1] < 1:
            raise ValueError(f"input {name!r}: expected [batch, seq] with seq >= 1, got shape {list(a.shape)}")
        lengths.append(int(a.shape[1]))
    return max(lengths) if lengths else None


def pad_feeds(feeds: Feeds, batch: int, seq_len: int | None, sequence_inputs: Collection[str]) -> Feeds:
    """Zero-pad every input to ``batch`` rows, and the sequence inputs to ``seq_len`` on axis 1.

    Inputs that already have the target shape are returned as they are (no copy).

    Raises:
        ValueError: an input is larger than the target on a padded axis.
    """
    padded: Feeds = {}
    for name, a in feeds.items():
        shape = list(a.shape)
        shape[0] = batch
        if seq_len is not None and name in sequence_inputs:
            shape[1] = seq_len
        if tuple(shape) == a.shape:
            padded[name] = a
            continue
        if any(have > want for have, want in zip(a.shape, shape, strict=True)):
            raise ValueError(f"input {name!r}: shape {list(a.shape)} does not fit the bucket {shape}")
        out = np.zeros(shape, dtype=a.dtype)
        out[tuple(slice(0, d) for d in a.shape)] = a
        padded[name] = out
    return padded


class BucketPlanner:
    """Splits and pads one call's feeds into bucket-shaped pieces; remembers the longest sequence.

    Not thread-safe: the runtime calls it under its lock.
    """

    def __init__(self, max_batch: int, sequence_inputs: Collection[str] = (), sequence_multiple: int = 1) -> None:
        _check_positive("max_batch", max_batch)
        _check_positive("sequence_multiple", sequence_multiple)
        self.max_batch = max_batch
        self.sequence_inputs = frozenset(sequence_inputs)
        self.sequence_multiple = sequence_multiple
        self.longest_sequence = 0

    def plan(self, feeds: Feeds) -> tuple[list[Piece], int | None]:
        """The padded pieces, in row order, and the true sequence length (None without one).

        Raises:
            ValueError: feeds without a common batch axis or with malformed sequence inputs.
        """
        rows = row_count(feeds)
        length = sequence_length(feeds, self.sequence_inputs)
        padded_length = None
        if length is not None:
            self.longest_sequence = max(self.longest_sequence, length)
            padded_length = sequence_bucket(length, self.sequence_multiple, self.longest_sequence)
        pieces = []
        for start, stop in chunk_ranges(rows, self.max_batch):
            part = feeds if (start, stop) == (0, rows) else {k: v[start:stop] for k, v in feeds.items()}
            bucket = batch_bucket(stop - start, self.max_batch)
            padded = pad_feeds(part, bucket, padded_length, self.sequence_inputs)
            pieces.append(Piece(start, stop, BucketKey.of(padded, padded_length), padded))
        return pieces, length


def sequence_axes(
    at_true: Sequence[tuple[int, ...]], at_padded: Sequence[tuple[int, ...]], true_len: int, padded_len: int
) -> list[tuple[int, ...]]:
    """Per output, the axes that follow the sequence length, from two runs of the model.

    ``at_true`` / ``at_padded`` are the output shapes for the same rows at the true and at the
    padded sequence length. An axis of size ``true_len`` in the first and ``padded_len`` in
    the second carries one value per token: padding must be sliced off it again.

    Raises:
        ValueError: the runs disagree in a way slicing cannot undo (another axis changed size,
            or the outputs differ in number or rank): such a model cannot take sequence padding.
    """
    if len(at_true) != len(at_padded):
        raise ValueError(f"outputs: {len(at_true)} at length {true_len}, {len(at_padded)} at length {padded_len}")
    axes = []
    for i, (a, b) in enumerate(zip(at_true, at_padded, strict=True)):
        if len(a) != len(b):
            raise ValueError(f"output {i}: rank changes with the sequence length ({list(a)} vs {list(b)})")
        follows = tuple(d for d, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
        if any(a[d] != true_len or b[d] != padded_len for d in follows):
            raise ValueError(
                f"output {i}: shape {list(a)} at sequence length {true_len} becomes {list(b)} at "
                f"{padded_len}; only axes of exactly the sequence length can be trimmed back"
            )
        axes.append(follows)
    return axes


class Sliceable(Protocol):
    """An array or a tensor: what ``trim`` slices."""

    @property
    def ndim(self) -> int: ...

    def __getitem__(self, index: Any) -> Any: ...


S = TypeVar("S", bound=Sliceable)


def trim(output: S, rows: int, axes: tuple[int, ...] = (), length: int | None = None) -> S:
    """The first ``rows`` rows of a bucket's output, and the first ``length`` entries of ``axes``.

    Works on numpy arrays and on torch tensors alike (a view either way), so a runtime can
    trim on the device before copying to the host.
    """
    index = [slice(None)] * output.ndim
    index[0] = slice(0, rows)
    if length is not None:
        for d in axes:
            index[d] = slice(0, length)
    return output[tuple(index)]


def _check_positive(what: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{what}: expected a positive integer, got {value}")
