"""The main job end to end on the bundled models, through the CLI and the Python API."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import inferno

pytestmark = pytest.mark.slow


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "inferno", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=900)


def test_digits_json_report_and_plan(tmp_path: Path) -> None:
    result = run_cli(
        "accelerate", "digits", "--json", "--repeats", "5",
        "--variants", "fp32,int8-dynamic,int8-static-minmax", "--runtimes", "onnxruntime",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["model"] == "digits"
    assert report["baseline"]["runtime"] == "torch"
    assert report["device"] == "all"  # the default: the CPU, and every GPU runtime found
    from inferno.hardware import detect
    from inferno.tuning.targets import torch_sees_cuda

    if not detect().has_cuda and not torch_sees_cuda():
        # then, maybe, warnings on the figures (a loaded machine, a wide spread)
        assert report["notes"][0] == "no CUDA GPU runtime found: measured on the CPU only"
        assert all(v["requested_provider"] is None for v in report["variants"])
    names = {(v["variant"], v["runtime"]) for v in report["variants"]}
    assert {("fp32", "onnxruntime"), ("int8-dynamic", "onnxruntime")} <= names
    chosen = report["chosen"]
    for key in ("name", "runtime", "precision", "throughput_per_s", "latency_ms_p50", "metrics",
                "within_budget", "path"):
        assert key in chosen
    assert chosen["within_budget"]
    assert chosen["metrics"]["accuracy"] >= 0.97 and chosen["criterion"] == "accuracy"
    _check_honest_speedups(report)
    folder = Path(chosen["path"])
    assert folder == (tmp_path / "model_repository" / "digits" / "1").resolve()
    for name in ("model.onnx", "plan.json", "report.json", "report.md", "report.png"):
        assert (folder / name).stat().st_size > 0
    plan = json.loads((folder / "plan.json").read_text())
    assert plan["runtime"] == chosen["runtime"] and plan["threads"] >= 1
    assert plan["signature"]["inputs"][0]["name"] == "pixels"
    assert plan["shapes"] == report["evaluation"]["shapes"]
    assert any("ONNX Runtime" in n for n in plan["notes"])  # the speed claim, or "the FP32 graph itself"
    assert "× ORT FP32 (IQR)" in (folder / "report.md").read_text()


def _check_honest_speedups(report: dict) -> None:
    """Speed-ups: re-timed against ONNX Runtime FP32 with a spread; the choice beats its twin."""
    timing, chosen = report["timing"], report["chosen"]
    assert timing["anchor"] == "fp32@onnxruntime" and timing["rounds"] >= 5
    noise = timing["noise"]
    assert noise["low"] <= noise["median"] <= noise["high"]
    retimed = [v for v in report["variants"] if v["speedup_rounds"]]
    assert {"fp32", "int8-dynamic"} & {v["variant"] for v in retimed}
    for v in retimed:
        assert v["speedup_low"] <= v["speedup"] <= v["speedup_high"]
    assert report["baseline"]["speedup_rounds"] == timing["rounds"]  # eager, re-timed alongside
    anchor = next(v for v in report["variants"] if v["variant"] == "fp32" and v["runtime"] == "onnxruntime")
    assert anchor["speedup"] == 1.0
    if (chosen["name"], chosen["runtime"]) != ("fp32", "onnxruntime"):
        assert chosen["speedup_low"] > max(1.0, noise["high"])
        assert chosen["speedup"] == max(v["speedup"] for v in retimed if v["within_budget"]
                                        and v["speedup_low"] > max(1.0, noise["high"]))
    int8 = [v for v in report["variants"] if v["precision"] == "int8" and v["error"] is None]
    assert int8 and all(isinstance(v["integer_ops"], int) for v in int8)


def test_python_api_and_load_plan_replay(tmp_path: Path) -> None:
    from inferno.models.zoo import load_bundled

    model = load_bundled("digits")
    report = inferno.accelerate(
        model, repository=tmp_path / "repo", variants=("fp32", "int8-static-minmax"),
        runtimes=("onnxruntime",), repeats=5, objective="latency",
    )
    assert isinstance(report, inferno.Report)
    assert report.objective == "latency"
    runner = inferno.load_plan(report.chosen.path)
    x = model.eval_data.samples["pixels"]
    labels = model.eval_data.labels
    probs = runner.predict(x)
    assert probs.shape == (len(x), 10)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-3)
    accuracy = float(np.mean(probs.argmax(1) == labels))
    assert accuracy == pytest.approx(report.chosen.metrics["accuracy"], abs=1e-9)
    runner.close()


def test_minilm_embeddings_within_budget(tmp_path: Path) -> None:
    report = inferno.accelerate(
        "minilm", repository=tmp_path / "repo", variants=("fp32", "int8-dynamic-pc"),
        runtimes=("onnxruntime",), repeats=5, max_eval_samples=96,
    )
    assert report.task == "embedding"
    assert report.baseline is not None and report.baseline.runtime == "torch"
    chosen = report.chosen
    assert chosen.within_budget
    assert chosen.metrics["cosine_mean"] >= 0.99 and chosen.metrics["cosine_min"] >= 0.95
    runner = inferno.load_plan(chosen.path)
    sentences = ["A quick test sentence.", "Is the embedding normalized?", "short"]
    emb = runner.predict(sentences)
    assert emb.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-3)
    assert (Path(chosen.path) / "tokenizer.json").exists()


@pytest.mark.gpu
def test_device_all_measures_cpu_and_gpu_in_one_run(tmp_path: Path) -> None:
    result = run_cli("accelerate", "minilm", "--device", "all", "--repeats", "5", "--max-samples", "64",
                     "--variants", "fp32,int8-dynamic,fp16,fp16-compute", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "CPU vs GPU" in result.stdout
    report = json.loads((tmp_path / "model_repository" / "minilm" / "1" / "report.json").read_text())
    ok = [v for v in report["variants"] if v["error"] is None]
    assert {"cpu", "cuda"} <= {"cuda" if v["requested_provider"] else "cpu" for v in ok}
    gpu_rows = [v for v in ok if v["requested_provider"]]
    assert all("CPU" not in v["provider"] for v in gpu_rows)  # what ran, never a silent fallback
    assert any(v["joules_per_inference"] for v in gpu_rows), "NVML energy should be readable on a GPU"
    best_gpu = max((v for v in gpu_rows if v["within_budget"]), key=lambda v: v["throughput_per_s"])
    assert best_gpu["metrics"]["cosine_mean"] >= 0.999


@pytest.mark.gpu
def test_hardware_lists_the_gpus(tmp_path: Path) -> None:
    result = run_cli("hardware", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    gpus = json.loads(result.stdout)["gpus"]
    assert gpus and all(g["memory_mb"] > 0 and g["name"] for g in gpus)
