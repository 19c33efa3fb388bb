"""Student specs, pruning arithmetic, calibration and the student.json checks: pure logic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inferno.errors import ConfigError, ModelLoadError
from inferno.models.student import check_target, is_student_folder, read_student_info
from inferno.students.distill import DEFAULT_SPEC, DigitsSpec, parse_digits_spec, parse_spec
from inferno.students.measure import calibration_error, classification_figures
from inferno.students.prune import (
    check_share,
    kept,
    layers,
    magnitude_masks,
    prune_state,
    strongest,
)


def test_the_default_spec_parses_to_a_two_conv_student() -> None:
    assert parse_digits_spec(DEFAULT_SPEC) == DigitsSpec(channels=(16, 32), hidden=64)


def test_a_full_spec_sets_every_field() -> None:
    spec = parse_digits_spec(" channels = 8,16,16 ; hidden=32;temperature=3.5;hard=0 ")
    assert spec == DigitsSpec(channels=(8, 16, 16), hidden=32, temperature=3.5, hard_weight=0.0)
    assert spec.architecture == {"channels": [8, 16, 16], "hidden": 32}


@pytest.mark.parametrize(("spec", "fragments"), [
    ("channels=16;hidden=64;depth=2", ["'depth'", "channels=", "hidden="]),
    ("channels=16,x;hidden=64", ["channels='x'", "1 to 3 convolution widths"]),
    ("channels=16,32,32,32;hidden=64", ["channels='16,32,32,32'", "1 to 3"]),
    ("channels=0;hidden=64", ["channels='0'", "1..512"]),
    ("channels=16;hidden=-4", ["hidden='-4'", "1..1024"]),
    ("channels=16;hidden=64;temperature=nan", ["temperature='nan'", "1..20"]),
    ("channels=16;hidden=64;hard=1.5", ["hard='1.5'", "0..1"]),
    ("channels=16", ["missing hidden"]),
    ("channels=16;;hidden=4", ["key=value", "''"]),
    ("channels16;hidden=4", ["key=value", "'channels16'"]),
    ("hidden=4;hidden=8;channels=4", ["'hidden' given twice"]),
])
def test_a_bad_spec_names_the_spec_the_key_and_what_is_allowed(spec: str, fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_digits_spec(spec)
    message = str(caught.value)
    assert repr(spec) in message
    for fragment in fragments:
        assert fragment in message, message


def test_parse_spec_keeps_values_as_text() -> None:
    assert parse_spec("layers=0,2,4", {"layers": "teacher layers"}) == {"layers": "0,2,4"}


@pytest.mark.parametrize(("width", "ratio", "expected"), [
    (64, 0.5, 32), (32, 0.4, 19), (128, 0.25, 96), (3, 0.9, 1), (1, 0.5, 1)])
def test_kept_rounds_and_keeps_at_least_one(width: int, ratio: float, expected: int) -> None:
    assert kept(width, ratio) == expected


def test_strongest_picks_largest_l1_norms_in_ascending_order_ties_to_the_lower_index() -> None:
    weights = np.zeros((5, 2, 3, 3), dtype=np.float32)
    for unit, scale in enumerate([1.0, -4.0, 2.0, 4.0, 0.5]):
        weights[unit] = scale
    assert strongest(weights, 3).tolist() == [1, 2, 3]
    assert strongest(np.ones((4, 3)), 2).tolist() == [0, 1]


def _state(channels: tuple[int, ...], hidden: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A digits-cnn state dict's shapes (Sequential indices as build_network lays them out)."""
    rng = np.random.default_rng(seed)
    state, index, before = {}, 0, 1
    for i, width in enumerate(channels):
        state[f"body.{index}.weight"] = rng.normal(size=(width, before, 3, 3)).astype(np.float32)
        state[f"body.{index}.bias"] = rng.normal(size=width).astype(np.float32)
        index += 3 if i == min(2, len(channels)) - 1 else 2
        before = width
    index += 1  # Flatten
    state[f"body.{index}.weight"] = rng.normal(size=(hidden, before * 16)).astype(np.float32)
    state[f"body.{index}.bias"] = rng.normal(size=hidden).astype(np.float32)
    state[f"body.{index + 2}.weight"] = rng.normal(size=(10, hidden)).astype(np.float32)
    state[f"body.{index + 2}.bias"] = rng.normal(size=10).astype(np.float32)
    return state


def test_layers_orders_convolutions_then_dense_layers_numerically() -> None:
    convs, denses = layers(_state((32, 64, 64), 128))
    assert convs == ["body.0", "body.2", "body.5"]
    assert denses == ["body.8", "body.10"]


def test_prune_state_shrinks_every_layer_and_keeps_input_and_classes() -> None:
    state = _state((32, 64, 64), 128)
    new, architecture = prune_state(state, 0.5)
    assert architecture == {"channels": [16, 32, 32], "hidden": 64}
    shapes = {k: v.shape for k, v in new.items()}
    assert shapes["body.0.weight"] == (16, 1, 3, 3)
    assert shapes["body.2.weight"] == (32, 16, 3, 3)
    assert shapes["body.5.weight"] == (32, 32, 3, 3)
    assert shapes["body.8.weight"] == (64, 32 * 16)
    assert shapes["body.10.weight"] == (10, 64)
    assert new["body.10.bias"].tolist() == state["body.10.bias"].tolist()


def test_prune_state_copies_the_surviving_weights_and_the_dense_columns_per_channel() -> None:
    state = _state((4, 6), 8, seed=1)
    state["body.2.weight"][[1, 4]] *= 0.001  # the two weakest filters of the last convolution
    new, architecture = prune_state(state, 1 / 3)
    assert architecture["channels"] == [3, 4]
    keep1 = strongest(state["body.0.weight"], 3)
    keep2 = np.array([0, 2, 3, 5])
    np.testing.assert_array_equal(new["body.0.weight"], state["body.0.weight"][keep1])
    np.testing.assert_array_equal(new["body.2.weight"], state["body.2.weight"][keep2][:, keep1])
    columns = np.concatenate([np.arange(c * 16, c * 16 + 16) for c in keep2])
    neurons = strongest(state["body.6.weight"][:, columns], 5)
    np.testing.assert_array_equal(new["body.6.weight"], state["body.6.weight"][neurons][:, columns])
    np.testing.assert_array_equal(new["body.8.weight"], state["body.8.weight"][:, neurons])


def test_prune_state_refuses_a_network_of_another_shape() -> None:
    with pytest.raises(ConfigError, match="two dense layers"):
        prune_state({"fc.weight": np.ones((3, 4)), "fc.bias": np.ones(3)}, 0.5)


def test_magnitude_masks_zero_exactly_the_share_of_smallest_weights_per_layer() -> None:
    state = _state((8, 16), 32)
    masks = magnitude_masks(state, 0.8)
    assert set(masks) == {k for k in state if k.endswith(".weight")}
    for key, mask in masks.items():
        weight = np.abs(state[key])
        assert (~mask).sum() == round(0.8 * weight.size)
        assert weight[mask].min() >= weight[~mask].max()


@pytest.mark.parametrize("value", [0.0, 1.0, -0.2, 1.5])
def test_a_share_outside_zero_one_is_refused(value: float) -> None:
    with pytest.raises(ConfigError, match="--ratio: expected a share between 0 and 1"):
        check_share(value, "--ratio")


def test_calibration_error_is_zero_when_confidence_matches_accuracy() -> None:
    # 4 samples at confidence 0.75, 3 of them right: perfectly calibrated
    probabilities = np.array([[0.75, 0.25]] * 4)
    assert calibration_error(probabilities, np.array([0, 0, 0, 1])) == pytest.approx(0.0)
    # all wrong at confidence 0.75: off by 0.75
    assert calibration_error(probabilities, np.array([1, 1, 1, 1])) == pytest.approx(0.75)


def test_classification_figures_softmax_logits_and_keep_probabilities() -> None:
    logits = np.array([[2.0, 0.0], [0.0, 2.0]])
    figures = classification_figures(logits, np.array([0, 0]))
    assert figures["accuracy"] == 0.5
    assert figures["mean_top_probability"] == pytest.approx(1 / (1 + np.exp(-2)), abs=1e-4)
    assert classification_figures(np.array([[0.9, 0.1]]), None) == {"mean_top_probability": 0.9}


# --- student.json ----------------------------------------------------------------------

GOOD = {"format": "inferno-student", "version": 1, "teacher": "digits", "method": "prune",
        "family": "digits-cnn", "architecture": {"channels": [8], "hidden": 4}, "spec": "ratio=0.5",
        "report": {}, "created": "2025-01-01T00:00:00+00:00", "inferno_version": "0.1.0"}


def _folder(tmp_path: Path, content: object, files: bool = True) -> Path:
    folder = tmp_path / "student"
    folder.mkdir()
    text = content if isinstance(content, str) else json.dumps(content)  # a list too
    (folder / "student.json").write_text(text)
    if files:
        (folder / "model.onnx").write_bytes(b"")
        (folder / "weights.pt").write_bytes(b"")
    return folder


def test_a_good_student_json_reads_back(tmp_path: Path) -> None:
    info = read_student_info(_folder(tmp_path, GOOD))
    assert (info.teacher, info.method, info.family, info.spec) == ("digits", "prune", "digits-cnn",
                                                                  "ratio=0.5")
    assert info.to_dict() == GOOD


@pytest.mark.parametrize(("content", "fragment"), [
    ("{not json", "cannot be read as JSON"),
    ([1, 2], "expected format 'inferno-student', got 'list'"),
    ({**GOOD, "format": "other"}, "expected format 'inferno-student', got 'other'"),
    ({**GOOD, "version": 2}, "expected version 1, got 2"),
    ({**GOOD, "teacher": 3}, "expected 'teacher' to be a str, got 3"),
    ({k: v for k, v in GOOD.items() if k != "architecture"}, "'architecture' to be a dict"),
    ({**GOOD, "method": "quantize"}, "expected method one of ['distill', 'prune'], got 'quantize'"),
    ({**GOOD, "family": "resnet"}, "unknown family 'resnet'"),
])
def test_a_corrupt_student_json_names_the_file_and_the_problem(
        tmp_path: Path, content: object, fragment: str) -> None:
    folder = _folder(tmp_path, content)
    with pytest.raises(ModelLoadError) as caught:
        read_student_info(folder)
    assert str(folder / "student.json") in str(caught.value)
    assert fragment in str(caught.value)


def test_a_student_folder_without_its_graph_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"model\.onnx is missing"):
        read_student_info(_folder(tmp_path, GOOD, files=False))


def test_check_target_refuses_a_foreign_folder_and_a_file_but_takes_a_student_folder(
        tmp_path: Path) -> None:
    check_target(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    check_target(tmp_path / "empty")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="non-empty folder without one"):
        check_target(tmp_path / "mine")
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="got a file"):
        check_target(tmp_path / "file")
    student = _folder(tmp_path, GOOD)
    assert is_student_folder(student)
    check_target(student)
