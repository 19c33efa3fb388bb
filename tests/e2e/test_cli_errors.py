"""Bad input never crashes: one line naming the problem, exit code 2, nothing half-written."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def inferno(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "inferno", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


def assert_one_line_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert fragment in lines[0], lines[0]


def _corrupt(tmp: Path) -> str:
    path = tmp / "broken.onnx"
    path.write_bytes(b"\x08\x07this is not protobuf" * 10)
    return str(path)


def _unsupported(tmp: Path) -> str:
    path = tmp / "weights.h5"
    path.write_bytes(b"HDF")
    return str(path)


def _pickle(tmp: Path) -> str:
    path = tmp / "model.pkl"
    path.write_bytes(pickle.dumps({"not": "a model"}))
    return str(path)


CASES = {
    "missing file": (lambda tmp: str(tmp / "nope.onnx"), [], "nope.onnx"),
    "corrupt onnx": (_corrupt, [], "broken.onnx"),
    "unsupported format": (_unsupported, [], "weights.h5"),
    "unknown bundled name": (lambda tmp: "resnet9000", [], "resnet9000"),
    "module cannot be imported": (lambda tmp: "no_such_pkg.models:net", [], "no_such_pkg"),
    "pickle without trust": (_pickle, [], "--trust"),
    "bad budget": (lambda tmp: "digits", ["--budget", "fast"], "--budget"),
    "bad objective": (lambda tmp: "digits", ["--objective", "speed"], "objective"),
    "unknown variant": (lambda tmp: "digits", ["--variants", "int3"], "int3"),
    "unknown device": (lambda tmp: "digits", ["--device", "tpu"], "device"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input(case: str, tmp_path: Path) -> None:
    make_model, extra, fragment = CASES[case]
    result = inferno("accelerate", make_model(tmp_path), "--repository", "repo", *extra, cwd=tmp_path)
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "repo").exists()


def test_evaluation_data_that_does_not_match(tmp_path: Path) -> None:
    np.savez(tmp_path / "bad.npz", pixels=np.zeros((4, 64), dtype=np.float32))
    result = inferno("accelerate", "digits", "--data", "bad.npz", "--repository", "repo", cwd=tmp_path)
    assert_one_line_error(result, "pixels")
    assert not (tmp_path / "repo").exists()


def test_cuda_without_a_gpu_is_an_error_not_a_cpu_run(tmp_path: Path) -> None:
    from inferno.hardware import detect
    from inferno.tuning.targets import torch_sees_cuda

    if detect().has_cuda or torch_sees_cuda():
        pytest.skip("this machine has a GPU")
    result = inferno("accelerate", "digits", "--device", "cuda", "--repository", "repo", cwd=tmp_path)
    assert_one_line_error(result, "--device cuda: no GPU runtime is usable here")
    assert not (tmp_path / "repo").exists()


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = inferno("--debug", "accelerate", "nope.onnx", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" in result.stderr


def test_debug_after_the_subcommand_shows_the_traceback(tmp_path: Path) -> None:
    """README puts --debug after the command, and the error hint says to add it."""
    result = inferno("accelerate", "nope.onnx", "--debug", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "No such option" not in result.stderr


def test_hardware_json(tmp_path: Path) -> None:
    import json

    result = inferno("hardware", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["cpu"]["usable_cores"] >= 1
    assert {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8"} <= set(info["cpu"]["features"])
    assert "CPUExecutionProvider" in info["ort_providers"]
