"""Per-model serving settings: REPO/<model>/serve.json over the server's defaults."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from inferno.errors import ConfigError
from inferno.serving.config import MODEL_CONFIG_FILE, ModelServeConfig, ServeConfig


def write(repo: Path, model: str, content: str) -> Path:
    path = repo / model / MODEL_CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path


def test_a_model_without_serve_json_gets_the_defaults(tmp_path: Path) -> None:
    defaults = ModelServeConfig(max_batch_size=16, timeout_s=5.0)
    config = ServeConfig(repository=tmp_path, defaults=defaults)
    (tmp_path / "plain").mkdir()
    assert config.for_model("plain") == defaults
    assert config.for_model("absent") == defaults


def test_serve_json_overrides_only_the_fields_it_names(tmp_path: Path) -> None:
    write(
        tmp_path,
        "bert",
        json.dumps({"max_batch_size": 8, "instances": 2, "max_queue_delay_us": 500}),
    )
    config = ServeConfig(
        repository=tmp_path, defaults=ModelServeConfig(timeout_s=5.0, cache_bytes=1024)
    )
    model = config.for_model("bert")
    assert (model.max_batch_size, model.instances, model.max_queue_delay_us) == (8, 2, 500)
    assert (model.timeout_s, model.cache_bytes) == (5.0, 1024)  # from the server's defaults
    assert model.max_queue_size == ModelServeConfig().max_queue_size
    assert config.for_model("other") == config.defaults  # one model's file touches no other


def test_an_empty_object_changes_nothing(tmp_path: Path) -> None:
    write(tmp_path, "m", "{}")
    config = ServeConfig(repository=tmp_path)
    assert config.for_model("m") == config.defaults


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        pytest.param("{max_batch_size: 8}", ["not valid JSON"], id="invalid-json"),
        pytest.param("[1, 2]", ["expected a JSON object", "got list"], id="not-an-object"),
        pytest.param(
            '{"max_batch": 8}', ["max_batch", "Extra inputs are not permitted"], id="unknown-field"
        ),
        pytest.param('{"max_batch_size": 0}', ["max_batch_size", "got 0"], id="batch-zero"),
        pytest.param(
            '{"max_batch_size": 5000}', ["max_batch_size", "got 5000"], id="batch-too-big"
        ),
        pytest.param('{"instances": "two"}', ["instances", "got 'two'"], id="instances-string"),
        pytest.param(
            '{"max_queue_delay_us": -1}', ["max_queue_delay_us", "got -1"], id="negative-delay"
        ),
        pytest.param('{"timeout_s": 0}', ["timeout_s", "got 0"], id="zero-timeout"),
        pytest.param(
            '{"group_by_length": "maybe"}', ["group_by_length", "got 'maybe'"], id="bool-string"
        ),
    ],
)
def test_bad_files_name_the_file_and_the_field(
    tmp_path: Path, content: str, fragments: list[str]
) -> None:
    path = write(tmp_path, "m", content)
    with pytest.raises(ConfigError) as info:
        ServeConfig(repository=tmp_path).for_model("m")
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_model_settings_are_frozen() -> None:
    config = ModelServeConfig()
    with pytest.raises(ValueError, match="frozen"):
        config.max_batch_size = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    "fields",
    [
        {"port": 70000},
        {"max_body_bytes": 10},
        {"versions": "some"},
        {"graceful_timeout_s": -1},
        {"unknown": 1},
    ],
)
def test_server_settings_refuse_bad_values(tmp_path: Path, fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(fields))):
        ServeConfig(repository=tmp_path, **fields)
