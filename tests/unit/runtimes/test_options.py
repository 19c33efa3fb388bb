"""RuntimeOptions: typed runtime knobs, read from and written to plan.json's ``hints`` object."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from inferno.errors import ConfigError
from inferno.runtimes import RuntimeOptions
from inferno.runtimes.options import _CHECKS


def test_every_field_is_checked_when_read() -> None:
    assert set(_CHECKS) == {f.name for f in fields(RuntimeOptions)}


def test_a_plan_written_before_reads_and_writes_back_the_same_object() -> None:
    hints = {"dynamic_quantization_group_size": 128, "max_batch_size": 256, "opt_batch_size": 32,
             "batch_first": False, "sequence_inputs": ["input_ids", "attention_mask"], "max_sequence_length": 128}
    options = RuntimeOptions.from_dict(hints)
    assert options.sequence_inputs == ("input_ids", "attention_mask") and options.batch_first is False
    assert options.to_dict() == hints
    assert RuntimeOptions.from_dict({}) == RuntimeOptions() and RuntimeOptions().to_dict() == {}


def test_cache_dir_is_a_path_and_written_as_a_string(tmp_path: Path) -> None:
    options = RuntimeOptions.from_dict({"cache_dir": str(tmp_path)})
    assert options.cache_dir == tmp_path
    assert options.to_dict() == {"cache_dir": str(tmp_path)}


def test_unknown_keys_are_left_out_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    assert RuntimeOptions.from_dict({"max_batch_size": 8, "retired_knob": 1}) == RuntimeOptions(max_batch_size=8)
    assert "retired_knob" in caplog.text


@pytest.mark.parametrize(("hints", "message"), [
    ({"max_batch_size": 0}, "hint max_batch_size: expected an integer >= 1, got 0"),
    ({"opt_batch_size": True}, "hint opt_batch_size"),
    ({"batch_first": "no"}, "hint batch_first: expected true or false"),
    ({"compile_mode": "fast"}, "hint compile_mode: expected one of"),
    ({"cache_dir": 3}, "hint cache_dir: expected a folder path"),
    ({"sequence_inputs": "ids"}, "hint sequence_inputs: expected a list of input names"),
])
def test_a_bad_value_names_the_hint(hints: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RuntimeOptions.from_dict(hints)
    with pytest.raises(ConfigError, match="hints: expected an object"):
        RuntimeOptions.from_dict(["max_batch_size"])  # type: ignore[arg-type]


def test_with_defaults_fills_only_what_is_unset() -> None:
    recipe = RuntimeOptions(dynamic_quantization_group_size=128, max_batch_size=16)
    filled = recipe.with_defaults(max_batch_size=256, opt_batch_size=32, batch_first=True)
    assert filled == RuntimeOptions(dynamic_quantization_group_size=128, max_batch_size=16, opt_batch_size=32)
