import logging
from pathlib import Path

import pytest

from inferno.errors import ConfigError, UnknownModelError
from inferno.repository import (
    check_name,
    models,
    redact,
    relative,
    version_path,
    versions,
    write_version,
)


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


# -- symlinks: the repository is a trust boundary ----------------------------------------------------


def test_a_model_folder_linked_to_outside_is_skipped_with_a_warning(
    repo: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_version(repo, "m", _fill)
    outside = tmp_path / "elsewhere"
    write_version(outside, "x", _fill)
    (repo / "evil").symlink_to(outside / "x", target_is_directory=True)
    with caplog.at_level(logging.WARNING, logger="inferno.repository"):
        assert models(repo) == {"m": [1]}
        assert versions(repo, "evil") == []
    assert "skipping evil in the repository: a symlink to outside it" in caplog.text
    assert str(tmp_path) not in caplog.text
    with pytest.raises(UnknownModelError, match=r"no model 'evil' in the repository$"):
        version_path(repo, "evil")
    assert models(repo, trust=True) == {"evil": [1], "m": [1]}
    assert version_path(repo, "evil", trust=True) == repo / "evil" / "1"


def test_a_version_folder_linked_to_outside_is_skipped(repo: Path, tmp_path: Path) -> None:
    write_version(repo, "m", _fill)
    outside = write_version(tmp_path / "elsewhere", "x", _fill)
    (repo / "m" / "2").symlink_to(outside, target_is_directory=True)
    assert versions(repo, "m") == [1]
    assert version_path(repo, "m") == repo / "m" / "1"
    with pytest.raises(UnknownModelError, match="no version 2"):
        version_path(repo, "m", 2)
    assert versions(repo, "m", trust=True) == [1, 2]


def test_a_plan_file_linked_to_outside_is_skipped(repo: Path, tmp_path: Path) -> None:
    first = write_version(repo, "m", _fill)
    second = write_version(repo, "m", _fill)
    (tmp_path / "plan.json").write_text("{}")
    (second / "plan.json").unlink()
    (second / "plan.json").symlink_to(tmp_path / "plan.json")
    assert versions(repo, "m") == [int(first.name)]
    assert versions(repo, "m", trust=True) == [1, 2]


def test_symlinks_that_stay_inside_the_repository_keep_working(repo: Path) -> None:
    write_version(repo, "m", _fill)
    (repo / "alias").symlink_to(repo / "m", target_is_directory=True)  # absolute target
    (repo / "m" / "2").symlink_to("1", target_is_directory=True)  # relative target
    second = write_version(repo, "other", _fill)
    (second / "plan.json").unlink()
    (second / "plan.json").symlink_to(Path("..", "..", "m", "1", "plan.json"))
    assert models(repo) == {"alias": [1, 2], "m": [1, 2], "other": [1]}


def test_a_repository_reached_through_a_symlink_is_listed(repo: Path, tmp_path: Path) -> None:
    write_version(repo, "m", _fill)
    link = tmp_path / "link"
    link.symlink_to(repo, target_is_directory=True)
    assert models(link) == {"m": [1]}


def test_messages_name_no_absolute_path(repo: Path) -> None:
    with pytest.raises(UnknownModelError) as info:
        version_path(repo, "x")
    assert str(info.value) == "no model 'x' in the repository"
    assert relative(repo / "m" / "1" / "plan.json", repo) == "m/1/plan.json"
    assert relative(Path("/somewhere/else/plan.json"), repo) == "plan.json"
    assert redact(f"Load model from {repo}/m/1/model.onnx failed", repo) == "Load model from m/1/model.onnx failed"


@pytest.mark.parametrize("name", ["digits\n", "digits\r\n", "di gits", "dígits", ".hidden", ""])
def test_a_model_name_must_match_whole(name: str) -> None:
    # "digits\n" used to pass: a "$" regex matches before a trailing newline
    with pytest.raises(ConfigError):
        check_name(name)
