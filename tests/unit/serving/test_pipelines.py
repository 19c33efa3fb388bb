"""The pure parts of the pipelines: splitting a text batch by length, top-k classes, and what
the text pipeline accepts."""

from __future__ import annotations

import itertools
import random
import re
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from inferno.errors import UserInputError
from inferno.models.signature import Signature, TensorSpec
from inferno.serving.pipelines import TEXT_INPUT, TextPipeline, length_groups, top_k
from inferno.serving.protocol import InferRequest, InputTensor, RequestedOutput


def cost(lengths: list[int], groups: list[list[int]], overhead: int) -> int:
    """Padded token rows of every call (rows x that call's longest), plus the overhead per call."""
    return sum(len(g) * max(lengths[i] for i in g) + overhead for g in groups)


def best_cost(lengths: list[int], overhead: int) -> int:
    """Brute force over every way to cut the sorted rows where the length changes."""
    ordered = sorted(lengths)
    cuts = [i for i in range(1, len(ordered)) if ordered[i] != ordered[i - 1]]
    best = None
    for n in range(len(cuts) + 1):
        for chosen in itertools.combinations(cuts, n):
            bounds = [0, *chosen, len(ordered)]
            total = sum((b - a) * ordered[b - 1] + overhead for a, b in itertools.pairwise(bounds))
            best = total if best is None else min(best, total)
    assert best is not None
    return best


def random_lengths(rng: random.Random) -> list[int]:
    """Up to 30 rows over at most 9 distinct lengths (short and long), so brute force stays cheap."""
    values = rng.sample(range(1, 13), rng.randint(1, 5)) + rng.sample(
        range(60, 129), rng.randint(0, 4)
    )
    return [rng.choice(values) for _ in range(rng.randint(1, 30))]


@pytest.mark.parametrize("seed", range(40))
def test_every_index_once_sorted_groups_and_the_cheapest_split(seed: int) -> None:
    rng = random.Random(seed)
    lengths = random_lengths(rng)
    overhead = rng.choice([0, 8, 64, 500])
    groups = length_groups(lengths, overhead)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert all(groups), "no empty group"
    for before, after in itertools.pairwise(groups):
        assert max(lengths[i] for i in before) < min(lengths[i] for i in after)
    assert cost(lengths, groups, overhead) <= cost(lengths, [list(range(len(lengths)))], overhead)
    assert cost(lengths, groups, overhead) == best_cost(lengths, overhead)


def test_equal_lengths_make_one_group() -> None:
    assert length_groups([7] * 10, 0) == [list(range(10))]


def test_a_huge_overhead_makes_one_group() -> None:
    lengths = [3, 120, 5, 64, 1, 128]
    groups = length_groups(lengths, 10**9)
    assert len(groups) == 1 and sorted(groups[0]) == list(range(6))


def test_splits_when_it_saves_more_padding_than_the_overhead() -> None:
    lengths = [2] * 10 + [100] * 2  # one call: 12 x 100 = 1200 rows; split: 20 + 200
    groups = length_groups(lengths, 64)
    assert groups == [list(range(10)), [10, 11]]
    assert cost(lengths, groups, 64) == 20 + 200 + 2 * 64


def test_does_not_split_when_the_saving_is_smaller_than_the_overhead() -> None:
    lengths = [10, 11, 12]  # one call: 36; three calls save only 3 rows each
    assert length_groups(lengths, 64) == [[0, 1, 2]]


def test_without_overhead_each_length_gets_its_own_call() -> None:
    lengths = [5, 3, 5, 9, 3]
    assert length_groups(lengths, 0) == [[1, 4], [0, 2], [3]]


def test_no_rows_no_groups() -> None:
    assert length_groups([], 64) == []


# --- top_k ----------------------------------------------------------------------------------

FORMAT = re.compile(rb"^-?\d+\.\d{6}:\d+$")


def test_top_k_best_first_as_score_colon_index() -> None:
    scores = np.array([[0.1, 0.7, 0.2], [0.5, -0.3, 0.25]], dtype=np.float32)
    out = top_k(scores, 2)
    assert out.shape == (2, 2) and out.dtype == object
    assert out.tolist() == [[b"0.700000:1", b"0.200000:2"], [b"0.500000:0", b"0.250000:2"]]


def test_top_k_larger_than_the_classes_returns_them_all() -> None:
    scores = np.array([[3.0, 1.0, 2.0]])
    assert top_k(scores, 10).tolist() == [[b"3.000000:0", b"2.000000:2", b"1.000000:1"]]


def test_top_k_ties_keep_the_lower_index_first() -> None:
    assert top_k(np.array([[0.5, 0.9, 0.5, 0.9]]), 4).tolist() == [
        [b"0.900000:1", b"0.900000:3", b"0.500000:0", b"0.500000:2"]
    ]


def test_top_k_matches_a_sort_on_random_scores() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(5, 12)).astype(np.float32)
    out = top_k(scores, 4)
    for r in range(5):
        indices = [int(item.split(b":")[1]) for item in out[r]]
        assert indices == sorted(range(12), key=lambda c: -scores[r, c])[:4]
        for item, c in zip(out[r], indices, strict=True):
            assert FORMAT.match(item), item
            assert float(item.split(b":")[0]) == pytest.approx(float(scores[r, c]), abs=1e-6)


# --- what the text pipeline accepts ---------------------------------------------------------


class _Runtime:
    sequence_multiple = 8

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        raise AssertionError("prepare must not run the model")


@pytest.fixture
def text_pipeline() -> TextPipeline:
    """A text pipeline around a stand-in runner: ``prepare`` needs no model or tokenizer."""
    signature = Signature((), (TensorSpec("embedding", "float32", ("batch", 4)),))
    runner: Any = SimpleNamespace(runtime=_Runtime(), signature=signature)
    return TextPipeline(runner, SimpleNamespace(max_length=16))  # type: ignore[arg-type]


def text_request(
    shape: tuple[int, ...], texts: list[bytes], datatype: str = "BYTES"
) -> InferRequest:
    data = np.empty(len(texts), dtype=object)
    data[:] = texts
    tensor = InputTensor(TEXT_INPUT, datatype, shape, data.reshape(shape))
    return InferRequest({TEXT_INPUT: tensor}, None, False)


def test_the_text_input_is_bytes_of_rank_one_as_its_metadata_says(
    text_pipeline: TextPipeline,
) -> None:
    assert [t.to_dict() for t in text_pipeline.inputs] == [
        {"name": TEXT_INPUT, "datatype": "BYTES", "shape": [-1]}
    ]
    work = text_pipeline.prepare(text_request((2,), [b"one", "tw\u00f6".encode()]))
    assert work.rows == 2 and work.payload == ["one", "tw\u00f6"]
    assert work.outputs == (RequestedOutput("embedding", False),)


@pytest.mark.parametrize("shape", [(1, 1), (3, 1), (1, 3), (1,) * 3, ()])
def test_other_ranks_of_the_text_input_are_refused_like_its_metadata_says(
    text_pipeline: TextPipeline, shape: tuple[int, ...]
) -> None:
    # Triton refuses [n, 1] for dims [-1]; accepting it contradicted the metadata (issue 15)
    texts = [b"a"] * int(np.prod(shape))
    with pytest.raises(UserInputError) as info:
        text_pipeline.prepare(text_request(shape, texts))
    assert str(info.value) == (
        f"input 'text': expected BYTES [n] (its metadata: BYTES [-1]), got BYTES {list(shape)}"
    )
