"""``inferno bench MODEL --profile ...`` end to end: the CLI runs digits under device profiles."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from inferno.models.loaders import load_model

SHORT = ("--duration", "0.3", "--warmup", "0.05")


def bench(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "inferno", "bench", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module", autouse=True)
def _digits_built() -> None:
    """Build digits once in the session cache, so that no CLI call below pays for it."""
    load_model("digits")


def test_list_profiles(tmp_path: Path) -> None:
    shown = bench("--list-profiles", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert all(name in shown.stdout for name in ("edge-tiny", "edge-small", "edge-medium"))
    listed = json.loads(bench("--list-profiles", "--json", cwd=tmp_path).stdout)
    assert {(p["name"], p["threads"], p["memory_mb"]) for p in listed} >= {("edge-small", 1, 512),
                                                                           ("edge-medium", 2, 2048)}


def test_two_profiles_as_json(tmp_path: Path) -> None:
    done = bench("digits", "--profile", "edge-small,edge-medium", "--batch", "4", "--json", *SHORT, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)["results"]
    assert [r["profile"]["name"] for r in results] == ["edge-small", "edge-medium"]
    for result in results:
        assert result["fits"] is True and result["batch"] == 4 and result["model"] == "digits"
        assert 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["p90"]
        assert 0 < result["peak_rss_mb"] < result["profile"]["memory_mb"]
        assert result["limits"]["memory_mechanism"] in ("rlimit", "cgroup")


def test_table_and_exit_3_when_a_profile_does_not_fit(tmp_path: Path) -> None:
    done = bench("digits", "--profile", "edge-small", "--profile", "edge-tiny", "--memory-mb", "64", *SHORT,
                 cwd=tmp_path)
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    for column in ("profile", "threads", "memory cap", "mechanism", "fits", "p50 ms", "peak RSS MB", "load ms"):
        assert column in done.stdout
    rows = [line for line in done.stdout.splitlines() if "memory_mb=64" in line]
    assert len(rows) == 2 and all(" no " in row and "64 MB" in row for row in rows)
    assert "digits: does not fit edge-small(memory_mb=64): needs more than 64 MB" in done.stderr


def test_fits_prints_a_table_and_exits_0(tmp_path: Path) -> None:
    done = bench("digits", "--threads", "1", "--memory-mb", "512", *SHORT, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (row,) = [line for line in done.stdout.splitlines() if line.strip("│ ").startswith("custom")]
    assert " yes " in row and "512 MB" in row


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("digits", "--profile", "edge-huge"), "--profile 'edge-huge': unknown profile; expected one of edge-tiny"),
        (("digits", "--profile", "edge-small", "--url", "http://127.0.0.1:1"), "--url: not with --profile"),
        (("digits", "--profile", "edge-small", "--threads", "0"), "--threads"),
        (("digits", "--profile", "edge-small", "--duration", "0"), "--duration 0"),
        (("--profile", "edge-small"), "MODEL: expected an edge bundle folder"),
        (("no/such/model.onnx", "--profile", "edge-small"), "'no/such/model.onnx' does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: tuple[str, ...], fragment: str, tmp_path: Path) -> None:
    done = bench(*SHORT, *args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], done.stderr
