from pathlib import Path

import pytest

from inferno.errors import ConfigError, UnknownModelError
from inferno.repository import models, version_path, write_version


def _fill(staging: Path, final: Path) -> None:
    (staging / "plan.json").write_text("{}")
    (staging / "where.txt").write_text(str(final))


def test_versions_count_up_and_name_their_final_path(repo: Path) -> None:
    first = write_version(repo, "m", _fill)
    second = write_version(repo, "m", _fill)
    assert (first.name, second.name) == ("1", "2")
    assert (second / "where.txt").read_text() == str(second)
    assert models(repo) == {"m": [1, 2]}
    assert version_path(repo, "m") == second
    assert version_path(repo, "m", 1) == first


def test_failure_leaves_nothing_behind(repo: Path) -> None:
    def broken(staging: Path, final: Path) -> None:
        (staging / "model.onnx").write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_version(repo, "m", broken)
    assert not repo.exists()
    write_version(repo, "m", _fill)
    with pytest.raises(RuntimeError):
        write_version(repo, "m", broken)
    assert sorted(p.name for p in (repo / "m").iterdir()) == ["1"]


def test_bad_names_and_unknown_models(repo: Path) -> None:
    with pytest.raises(ConfigError, match=r"model name '\.\./evil'"):
        write_version(repo, "../evil", _fill)
    with pytest.raises(UnknownModelError, match="no model 'x'"):
        version_path(repo, "x")
    write_version(repo, "m", _fill)
    with pytest.raises(UnknownModelError, match="no version 7"):
        version_path(repo, "m", 7)
