"""Profile runs for real: a child process under RLIMIT_AS (or a cgroup) runs ONNX Runtime sessions."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from inferno.edge import profiles
from inferno.edge._profile_inputs import Target
from inferno.edge.bundle import read_manifest
from inferno.edge.profiles import (
    PROFILES,
    Profile,
    ProfileResult,
    make_profile,
    prepare_target,
    run_profile,
)
from inferno.errors import DataMismatchError, ModelLoadError
from inferno.models.loaders import load_model


def short(model: str | Target, profile: Profile) -> ProfileResult:
    """A profile run of a fraction of a second."""
    return run_profile(model, profile, duration_s=0.3, warmup_s=0.05)


@pytest.fixture(scope="module")
def digits_onnx() -> Path:
    return load_model("digits").onnx_path


@pytest.fixture(scope="module")
def big_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A graph whose one weight takes 96 MB: it fits 512 MB of address space, not 256 MB."""
    rows = 24 * 2**20 // 16  # float32 [rows, 16] = 96 MB
    weight = numpy_helper.from_array(np.full((rows, 16), 0.5, np.float32), "weight")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["weight", "index"], ["picked"]),
         helper.make_node("ReduceSum", ["picked"], ["out"], keepdims=0)],
        "big", [helper.make_tensor_value_info("index", TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [])], initializer=[weight])
    path = tmp_path_factory.mktemp("big") / "big.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


def _bundle(folder: Path, model: Path, *, rows: int = 16) -> Path:
    """A bundle as ``inferno export`` writes one: model file, samples with inputs, expectations and labels."""
    folder.mkdir()
    shutil.copyfile(model, folder / "model.onnx")
    pixels = np.random.default_rng(0).random((rows, 1, 8, 8), dtype=np.float32) * 16
    arrays = {"pixels": pixels, "labels": np.arange(rows) % 10,
              "expected:probabilities": np.zeros((rows, 10), np.float32)}
    np.savez(folder / "samples.npz", **arrays)  # type: ignore[arg-type]  # numpy's stub types the first keyword
    manifest = {"format": "inferno-edge-bundle", "version": 1, "name": "digits-edge", "model": "model.onnx",
                "inputs": [{"name": "pixels", "dtype": "float32", "shape": ["batch", 1, 8, 8]}],
                "outputs": [{"name": "probabilities", "dtype": "float32", "shape": ["batch", 10]}],
                "task": "classification", "preprocessor": {"kind": "tensor"}, "threads": 1, "files": {}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_digits_fits_edge_small_with_sensible_figures(digits_onnx: Path) -> None:
    result = short(str(digits_onnx), PROFILES["edge-small"])
    assert result.fits and result.reason is None
    assert result.limits.memory_mechanism in ("rlimit", "cgroup") and result.limits.memory_mb == 512
    assert result.latency_ms is not None
    assert 0 < result.latency_ms["p50"] <= result.latency_ms["p90"] <= result.latency_ms["p99"]
    assert result.runs >= profiles.MIN_RUNS and result.throughput is not None and result.throughput > 0
    assert result.load_ms is not None and result.load_ms > 0
    assert result.baseline_rss_mb is not None and result.peak_rss_mb is not None
    # Python + numpy + onnxruntime first, then the model on top; all of it under the cap
    assert 10 < result.baseline_rss_mb < result.peak_rss_mb < 512
    if result.limits.memory_mechanism == "rlimit":
        assert result.peak_vm_mb is not None and result.peak_rss_mb < result.peak_vm_mb <= 512
    assert not any("imported" in note for note in result.notes), result.notes


def test_a_tiny_cap_does_not_fit_and_says_why(digits_onnx: Path) -> None:
    result = short(str(digits_onnx), make_profile(name="tiny", memory_mb=64))
    assert not result.fits and result.latency_ms is None and result.peak_rss_mb is None
    assert result.reason is not None and "\n" not in result.reason
    assert result.reason.startswith("does not fit tiny: needs more than 64 MB")
    assert "out of memory while" in result.reason and "with 2048 MB it peaks at" in result.reason


def test_a_model_that_needs_more_fails_where_digits_fits(digits_onnx: Path, big_onnx: Path) -> None:
    tiny = PROFILES["edge-tiny"]
    assert short(str(digits_onnx), tiny).fits
    big = short(str(big_onnx), tiny)
    assert not big.fits and big.reason is not None and "edge-tiny" in big.reason
    needs = float(big.reason.rsplit("peaks at ", 1)[1].split(" MB")[0])
    assert needs > 256  # the probe saw what it takes: more than the cap
    small = short(str(big_onnx), PROFILES["edge-small"])
    assert small.fits and small.peak_rss_mb is not None and small.peak_rss_mb > 96


def test_bundle_folder_rows_tiled_to_the_batch(tmp_path: Path, digits_onnx: Path) -> None:
    bundle = _bundle(tmp_path / "bundle", digits_onnx)
    with prepare_target(str(bundle), batch=40) as target:
        assert target.kind == "bundle" and target.name == "digits-edge"
        with np.load(target.feeds_path) as feeds:
            assert feeds.files == ["pixels"]  # only the inputs, not the expectations or labels
            pixels = feeds["pixels"]
        with np.load(bundle / "samples.npz") as samples:
            assert np.array_equal(pixels[16:32], samples["pixels"]) and len(pixels) == 40
        result = short(target, PROFILES["edge-medium"])
    assert result.fits and result.batch == 40 and result.model == "digits-edge"
    assert result.limits.threads == 2 and "samples.npz" in result.inputs


def test_broken_bundles_are_input_errors(tmp_path: Path, digits_onnx: Path) -> None:
    bundle = _bundle(tmp_path / "bundle", digits_onnx)
    manifest = json.loads((bundle / "manifest.json").read_text())
    (bundle / "manifest.json").write_text(json.dumps({**manifest, "format": "something-else"}))
    with pytest.raises(ModelLoadError, match="format 'something-else', expected 'inferno-edge-bundle'"):
        read_manifest(bundle)
    (bundle / "manifest.json").write_text(json.dumps({**manifest, "model": "missing.ort"}))
    with pytest.raises(ModelLoadError, match=r"'missing\.ort'"), prepare_target(str(bundle)):
        pass
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    np.savez(tmp_path / "ints.npz", pixels=np.zeros((2, 1, 8, 8), np.int64))
    with pytest.raises(DataMismatchError, match="input 'pixels': expected float32"), \
            prepare_target(str(bundle), data=tmp_path / "ints.npz"):
        pass
    (bundle / "model.onnx").write_bytes(b"not a graph")  # runs under no cap either: not a fit question
    with pytest.raises(ModelLoadError, match="fails under 512 MB and under 2048 MB alike, so not for want of memory"):
        short(str(bundle), PROFILES["edge-small"])


def test_the_child_imports_numpy_and_onnxruntime_only(tmp_path: Path, digits_onnx: Path) -> None:
    feeds = tmp_path / "feeds.npz"
    np.savez(feeds, pixels=np.zeros((1, 1, 8, 8), np.float32))
    config = {"model": str(digits_onnx), "feeds": str(feeds), "threads": 1, "probe": True, "memory_mb": 512}
    done = subprocess.run([sys.executable, "-P", str(profiles.CHILD)], input=json.dumps(config),
                          capture_output=True, text=True, env=profiles.child_environment(1), timeout=120)
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 0 and events[0] == {"event": "limits", "memory": "rlimit", "cpu": "none", "notes": []}
    modules = set(events[-1]["modules"])
    assert {"numpy", "onnxruntime"} <= modules
    assert not modules & {"inferno", "torch", "onnx", "pydantic", "transformers", "rich"}
