"""``inferno distill`` and ``inferno prune`` as a user runs them: a real process, real training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inferno.cli import main
from tests.e2e.test_cli_errors import assert_one_line_error, inferno


def test_a_bad_student_spec_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = inferno("distill", "digits", "--student", "channels=16;hidden=64;depth=2", cwd=tmp_path)
    assert_one_line_error(result, "unknown key 'depth'")
    assert not (tmp_path / "students").exists()


def test_ratio_and_sparsity_together_are_refused(tmp_path: Path) -> None:
    result = inferno("prune", "digits", "--ratio", "0.5", "--sparsity", "0.8", cwd=tmp_path)
    assert_one_line_error(result, "--ratio (structured) or --sparsity (unstructured)")


def test_a_non_student_out_folder_is_refused_and_left_alone(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    result = inferno("prune", "digits", "--out", "mine", cwd=tmp_path)
    assert_one_line_error(result, "--out mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_prune_writes_a_student_and_prints_teacher_against_student(tmp_path: Path) -> None:
    result = inferno("prune", "digits", "--ratio", "0.5", "--epochs", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "students" / "digits-prune"
    assert (folder / "student.json").is_file() and (folder / "model.onnx").is_file()
    for row in ("ONNX size", "parameters", "accuracy", "agreement with teacher",
                "latency p50, batch 1", "throughput, batch 32", "47,530"):
        assert row in result.stdout, result.stdout
    assert str(Path("students") / "digits-prune") in result.stdout

    info = json.loads((folder / "student.json").read_text())
    assert (info["teacher"], info["method"], info["spec"]) == ("digits", "prune", "ratio=0.5")


def test_json_prints_student_json_with_the_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """In process (the subprocess runs above cover the entry point): --json and --out."""
    monkeypatch.chdir(tmp_path)
    main(["distill", "digits", "--student", "channels=4;hidden=8", "--epochs", "1",
          "--out", "small", "--json"])
    info = json.loads(capsys.readouterr().out)
    assert info["folder"] == "small" and (tmp_path / "small" / "student.json").is_file()
    assert info["method"] == "distill" and info["architecture"] == {"channels": [4], "hidden": 8}
    assert info["report"]["student"]["params"] < info["report"]["teacher"]["params"]
