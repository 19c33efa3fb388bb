"""Shape buckets: which bucket a batch or a sequence goes to, padding, chunking, planning."""

from __future__ import annotations

import numpy as np
import pytest

from inferno.runtimes._buckets import (
    BucketKey,
    BucketPlanner,
    batch_bucket,
    batch_buckets,
    chunk_ranges,
    pad_feeds,
    row_count,
    sequence_axes,
    sequence_bucket,
    sequence_length,
    trim,
)


@pytest.mark.parametrize(("n", "max_batch", "bucket"), [
    (1, 256, 1), (2, 256, 2), (3, 256, 4), (4, 256, 4), (5, 256, 8), (33, 256, 64),
    (129, 256, 256), (256, 256, 256), (1, 1, 1), (65, 100, 100), (100, 100, 100), (64, 100, 64),
])
def test_batch_bucket_is_the_next_power_of_two_capped(n: int, max_batch: int, bucket: int) -> None:
    assert batch_bucket(n, max_batch) == bucket


@pytest.mark.parametrize(("n", "max_batch"), [(0, 8), (9, 8), (-1, 8), (1, 0)])
def test_batch_bucket_rejects_sizes_outside_the_range(n: int, max_batch: int) -> None:
    with pytest.raises(ValueError, match=r"expected"):
        batch_bucket(n, max_batch)


def test_batch_buckets_lists_every_bucket_batch_bucket_can_return() -> None:
    assert batch_buckets(256) == (1, 2, 4, 8, 16, 32, 64, 128, 256)
    assert batch_buckets(100) == (1, 2, 4, 8, 16, 32, 64, 100)
    assert batch_buckets(1) == (1,)
    for max_batch in (1, 2, 3, 7, 64, 100):
        assert {batch_bucket(n, max_batch) for n in range(1, max_batch + 1)} == set(batch_buckets(max_batch))


@pytest.mark.parametrize(("length", "multiple", "cap", "bucket"), [
    (1, 32, 128, 32), (32, 32, 128, 32), (33, 32, 128, 64), (100, 32, 128, 128),
    (100, 32, 100, 100), (5, 32, 20, 20), (5, 1, 20, 5), (128, 32, 128, 128), (127, 32, 127, 127),
])
def test_sequence_bucket_rounds_up_but_never_past_the_cap(length: int, multiple: int, cap: int, bucket: int) -> None:
    assert sequence_bucket(length, multiple, cap) == bucket


def test_sequence_bucket_rejects_a_cap_shorter_than_the_length() -> None:
    with pytest.raises(ValueError, match="cap 10 is shorter than the sequence length 11"):
        sequence_bucket(11, 32, 10)
    with pytest.raises(ValueError, match="sequence length"):
        sequence_bucket(0, 32, 10)


@pytest.mark.parametrize(("rows", "max_batch", "ranges"), [
    (1, 8, [(0, 1)]), (8, 8, [(0, 8)]), (9, 8, [(0, 8), (8, 9)]),
    (300, 256, [(0, 256), (256, 300)]), (512, 256, [(0, 256), (256, 512)]),
])
def test_chunk_ranges_cover_every_row_once(rows: int, max_batch: int, ranges: list[tuple[int, int]]) -> None:
    assert chunk_ranges(rows, max_batch) == ranges


def test_row_count_needs_one_shared_batch_axis() -> None:
    assert row_count({"a": np.zeros((3, 2)), "b": np.zeros((3,))}) == 3
    with pytest.raises(ValueError, match="disagree"):
        row_count({"a": np.zeros((3, 2)), "b": np.zeros((4, 2))})
    with pytest.raises(ValueError, match="scalar"):
        row_count({"a": np.zeros(())})
    with pytest.raises(ValueError, match="at least one row"):
        row_count({"a": np.zeros((0, 2))})
    with pytest.raises(ValueError, match="at least one input"):
        row_count({})


def test_sequence_length_is_the_longest_sequence_input() -> None:
    feeds = {"ids": np.zeros((2, 7), np.int64), "mask": np.zeros((2, 9), np.int64), "x": np.zeros((2, 50))}
    assert sequence_length(feeds, ("ids", "mask")) == 9
    assert sequence_length(feeds, ()) is None
    assert sequence_length(feeds, ("absent",)) is None
    with pytest.raises(ValueError, match=r"input 'v': expected \[batch, seq\]"):
        sequence_length({"v": np.zeros((2,))}, ("v",))


def test_pad_feeds_zero_pads_rows_and_sequences_and_keeps_values() -> None:
    ids = np.arange(1, 7, dtype=np.int64).reshape(2, 3)
    image = np.ones((2, 4), np.float32)
    padded = pad_feeds({"ids": ids, "image": image}, 4, 8, ("ids",))
    assert padded["ids"].shape == (4, 8) and padded["ids"].dtype == np.int64
    np.testing.assert_array_equal(padded["ids"][:2, :3], ids)
    assert not padded["ids"][2:].any() and not padded["ids"][:, 3:].any()
    assert padded["image"].shape == (4, 4)  # not a sequence input: axis 1 stays
    np.testing.assert_array_equal(padded["image"][:2], image)
    assert not padded["image"][2:].any()


def test_pad_feeds_returns_inputs_of_the_right_shape_as_they_are() -> None:
    ids = np.ones((4, 8), np.int64)
    assert pad_feeds({"ids": ids}, 4, 8, ("ids",))["ids"] is ids
    assert pad_feeds({"ids": ids}, 4, None, ("ids",))["ids"] is ids


def test_pad_feeds_refuses_to_shrink() -> None:
    with pytest.raises(ValueError, match="does not fit the bucket"):
        pad_feeds({"ids": np.ones((4, 8))}, 2, 8, ("ids",))
    with pytest.raises(ValueError, match="does not fit the bucket"):
        pad_feeds({"ids": np.ones((4, 8))}, 4, 4, ("ids",))


def test_bucket_key_covers_every_input_shape_and_dtype() -> None:
    a = BucketKey.of({"x": np.zeros((4, 3), np.float32)}, None)
    assert a.batch == 4 and a.sequence is None
    assert a == BucketKey.of({"x": np.ones((4, 3), np.float32)}, None)
    assert a != BucketKey.of({"x": np.zeros((4, 5), np.float32)}, None)  # another image size
    assert a != BucketKey.of({"x": np.zeros((4, 3), np.float64)}, None)
    assert len({a, BucketKey.of({"x": np.zeros((4, 3), np.float32)}, None)}) == 1


def _text(rows: int, length: int) -> dict[str, np.ndarray]:
    ids = np.arange(1, rows * length + 1, dtype=np.int64).reshape(rows, length)
    return {"ids": ids, "mask": np.ones_like(ids)}


def test_planner_pads_to_batch_and_sequence_buckets() -> None:
    planner = BucketPlanner(max_batch=8, sequence_inputs=("ids", "mask"), sequence_multiple=32)
    pieces, length = planner.plan(_text(3, 40))
    assert length == 40
    assert [(p.start, p.stop, p.key.batch, p.key.sequence) for p in pieces] == [(0, 3, 4, 40)]  # cap: longest seen
    pieces, length = planner.plan(_text(2, 5))
    assert length == 5
    (piece,) = pieces
    assert (piece.key.batch, piece.key.sequence) == (2, 32)
    assert piece.feeds["ids"].shape == piece.feeds["mask"].shape == (2, 32)
    np.testing.assert_array_equal(piece.feeds["ids"][:, :5], _text(2, 5)["ids"])
    assert not piece.feeds["mask"][:, 5:].any()  # padding is masked out


def test_planner_chunks_batches_over_the_maximum() -> None:
    planner = BucketPlanner(max_batch=4)
    x = np.arange(11, dtype=np.float32)[:, None]
    pieces, length = planner.plan({"x": x})
    assert length is None
    assert [(p.start, p.stop, p.key.batch) for p in pieces] == [(0, 4, 4), (4, 8, 4), (8, 11, 4)]
    assert pieces[0].key == pieces[2].key  # one program serves both
    np.testing.assert_array_equal(np.concatenate([trim(p.feeds["x"], p.rows) for p in pieces]), x)


def test_planner_rejects_feeds_without_a_common_batch() -> None:
    with pytest.raises(ValueError, match="disagree"):
        BucketPlanner(max_batch=4).plan({"a": np.zeros((2, 1)), "b": np.zeros((3, 1))})


def test_sequence_axes_finds_token_axes_and_ignores_coincidences() -> None:
    # pooled [1, 64] where 64 is also the padded length; tokens [1, seq, 64]
    axes = sequence_axes([(1, 64), (1, 40, 64)], [(1, 64), (1, 64, 64)], 40, 64)
    assert axes == [(), (1,)]


def test_sequence_axes_refuses_outputs_padding_cannot_undo() -> None:
    with pytest.raises(ValueError, match="only axes of exactly the sequence length"):
        sequence_axes([(1, 20)], [(1, 32)], 40, 64)  # a strided / pooled-by-2 axis
    with pytest.raises(ValueError, match="rank"):
        sequence_axes([(1, 4)], [(1, 4, 1)], 40, 64)
    with pytest.raises(ValueError, match="outputs"):
        sequence_axes([(1, 4)], [], 40, 64)


def test_trim_slices_rows_and_sequence_axes() -> None:
    out = np.arange(4 * 8 * 2).reshape(4, 8, 2)
    np.testing.assert_array_equal(trim(out, 3), out[:3])
    np.testing.assert_array_equal(trim(out, 3, (1,), 5), out[:3, :5])
    np.testing.assert_array_equal(trim(out, 3, (), 5), out[:3])
