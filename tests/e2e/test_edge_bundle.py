"""``inferno export --target edge``: real INT8 bundles of digits and minilm, run by their own runner.

The fresh-venv test is the acceptance check: a venv holding only onnxruntime and numpy
(never inferno) runs the digits bundle.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import venv
from dataclasses import replace
from importlib import metadata
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from inferno.cli import main
from inferno.edge.bundle import BundleTooLargeError, export_edge, read_manifest
from inferno.errors import ConfigError
from inferno.models.loaders import load_model

FAST = {"variants": ("int8-static-minmax",), "repeats": 3}


@pytest.fixture(scope="module")
def digits_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("edge") / "digits-edge"
    export_edge("digits", out, threads=1, **FAST)
    return out


@pytest.fixture(scope="module")
def minilm_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = load_model("minilm")
    out = tmp_path_factory.mktemp("edge") / "minilm-edge"
    export_edge(replace(model, eval_data=model.eval_data.take(16)), out, variants=("int8-dynamic-pc",), repeats=3)
    return out


def _run(folder: Path, *args: str, python: str = sys.executable) -> subprocess.CompletedProcess[str]:
    return subprocess.run([python, str(folder / "run.py"), *args], capture_output=True, text=True, timeout=120)


def test_the_manifest_names_every_file_by_sha256_and_carries_the_figures(digits_bundle: Path) -> None:
    manifest = read_manifest(digits_bundle)
    files = {p.name for p in digits_bundle.iterdir()} - {"manifest.json"}
    assert set(manifest["files"]) == files
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((digits_bundle / name).read_bytes()).hexdigest() == digest
    assert manifest["model"] == "model.ort" and manifest["model_format"] == "ort"
    assert manifest["inputs"][0]["name"] == "pixels" and manifest["outputs"][0]["name"] == "probabilities"
    assert manifest["requires"] == ["onnxruntime", "numpy"]
    accuracy = manifest["accuracy"]
    assert accuracy["bundle"]["accuracy"] >= accuracy["bundle"]["reference_accuracy"] - 0.01
    assert accuracy["plan"]["accuracy"] > 0.9 and accuracy["reference"]["metrics"]["accuracy"] > 0.9
    assert sum(manifest["size_bytes"].values()) < manifest["source_size_bytes"] * 0.5  # INT8: ~a quarter


def test_the_shipped_file_is_int8_and_answers_like_the_fp32_model(digits_bundle: Path) -> None:
    model = load_model("digits")
    pixels = model.eval_data.samples["pixels"][:64]
    int8 = ort.InferenceSession(str(digits_bundle / "model.ort"), providers=["CPUExecutionProvider"])
    fp32 = ort.InferenceSession(str(model.onnx_path), providers=["CPUExecutionProvider"])
    got, want = int8.run(None, {"pixels": pixels})[0], fp32.run(None, {"pixels": pixels})[0]
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.95
    assert not np.array_equal(got, want)  # quantized, not a copy of the FP32 graph


def test_the_ort_file_runs_integer_kernels(digits_bundle: Path, tmp_path: Path) -> None:
    # A full ORT build does not re-optimize an ORT-format file at load: the fusions must be in it.
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp_path / "profile")
    session = ort.InferenceSession(str(digits_bundle / "model.ort"), options, providers=["CPUExecutionProvider"])
    session.run(None, {"pixels": np.zeros((1, 1, 8, 8), dtype=np.float32)})
    events = json.loads(Path(session.end_profiling()).read_text())
    ops = {e["args"].get("op_name") for e in events if e.get("cat") == "Node"}
    assert "QLinearConv" in ops and "Conv" not in ops, ops


def test_the_runner_checks_itself_and_answers_an_npy(digits_bundle: Path, tmp_path: Path) -> None:
    check = _run(digits_bundle, "--check")
    assert check.returncode == 0, check.stderr
    assert check.stdout.startswith("ok:")
    pixels = load_model("digits").eval_data.samples["pixels"][:5]
    np.save(tmp_path / "x.npy", pixels)
    answer = _run(digits_bundle, "--input", str(tmp_path / "x.npy"))
    assert answer.returncode == 0, answer.stderr
    top = [row["class"] for row in json.loads(answer.stdout)["top"]]
    session = ort.InferenceSession(str(digits_bundle / "model.ort"), providers=["CPUExecutionProvider"])
    assert top == session.run(None, {"pixels": pixels})[0].argmax(1).tolist()


def test_the_runner_refuses_a_wrong_shape_with_one_line(digits_bundle: Path, tmp_path: Path) -> None:
    np.save(tmp_path / "bad.npy", np.zeros((2, 8, 8), dtype=np.float32))
    answer = _run(digits_bundle, "--input", str(tmp_path / "bad.npy"))
    assert answer.returncode == 2
    assert answer.stderr.strip().count("\n") == 0 and "input 'pixels'" in answer.stderr


def test_a_changed_file_fails_the_check(digits_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(digits_bundle, copy)
    with (copy / "model.ort").open("ab") as f:
        f.write(b"\0")
    answer = _run(copy, "--check")
    assert answer.returncode == 1 and "model.ort: sha256 differs" in answer.stderr


def _install(python: str, *packages: str) -> None:
    pins = [f"{name}=={metadata.version(name)}" for name in packages]  # this machine's versions: cached wheels
    install = subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *pins],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr


def test_a_fresh_venv_with_only_the_stated_dependencies_runs_the_bundles(
        digits_bundle: Path, minilm_bundle: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = str(env_dir / "bin" / "python")
    _install(python, "onnxruntime", "numpy")
    isolated = subprocess.run([python, "-c", "import inferno"], capture_output=True, text=True)
    assert isolated.returncode != 0  # the venv really lacks inferno (and torch, and the rest)
    bundle = tmp_path / "moved"  # a copy elsewhere: nothing points back at the build machine
    shutil.copytree(digits_bundle, bundle)
    check = _run(bundle, "--check", python=python)
    assert check.returncode == 0, check.stderr
    samples = subprocess.run([python, str(bundle), "--samples"], capture_output=True, text=True, timeout=120)
    assert samples.returncode == 0, samples.stderr
    with np.load(bundle / "samples.npz") as data:
        expected = data["expected:probabilities"].argmax(1).tolist()
    assert [row["class"] for row in json.loads(samples.stdout)["top"]] == expected
    # a text bundle: the same venv plus tokenizers, its one extra dependency
    _install(python, "tokenizers")
    text = tmp_path / "text"
    shutil.copytree(minilm_bundle, text)
    check = _run(text, "--check", python=python)
    assert check.returncode == 0, check.stderr
    answer = _run(text, "--text", "a quiet morning by the lake", python=python)
    assert answer.returncode == 0, answer.stderr
    (embedding,) = json.loads(answer.stdout)["outputs"]["embedding"]
    assert len(embedding) == 384 and abs(np.linalg.norm(embedding) - 1) < 1e-3


def test_a_size_budget_that_cannot_be_met_is_an_error_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "small"
    with pytest.raises(BundleTooLargeError, match=r"--max-size 0\.05 MB"):
        export_edge("digits", out, max_size_mb=0.05, **FAST)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # the staging folder is gone too


def test_a_folder_that_is_not_a_bundle_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="folder with other files"):
        export_edge("digits", tmp_path, **FAST)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_text_bundle_carries_its_tokenizer_and_embeds_sentences(minilm_bundle: Path) -> None:
    model = load_model("minilm")
    out = minilm_bundle
    manifest = read_manifest(out)
    assert (out / "tokenizer.json").is_file()
    assert manifest["requires"] == ["onnxruntime", "numpy", "tokenizers"]
    assert manifest["accuracy"]["bundle"]["cosine_mean"] > 0.98
    answer = _run(out, "--text", "the cat sat on the mat", "a dog barked")
    assert answer.returncode == 0, answer.stderr
    embeddings = np.array(json.loads(answer.stdout)["outputs"]["embedding"])
    reference = model.preprocessor.encode(["the cat sat on the mat", "a dog barked"])
    fp32 = ort.InferenceSession(str(model.onnx_path), providers=["CPUExecutionProvider"]).run(None, reference)[0]
    cosine = np.sum(embeddings * fp32, axis=1) / np.linalg.norm(embeddings, axis=1) / np.linalg.norm(fp32, axis=1)
    assert embeddings.shape == (2, 384) and cosine.min() > 0.97


def test_the_cli_exports_and_refuses_bad_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "digits", "--target", "cloud"])
    assert exit_info.value.code == 2
    assert "--target 'cloud': expected one of edge" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "digits", "--max-size", "0"])
    assert exit_info.value.code == 2
    main(["export", "digits", "--out", str(tmp_path / "b"), "--repeats", "3", "--json"])
    written = json.loads(capsys.readouterr().out)
    assert written["model_format"] == "ort" and 0 < written["size_ratio"] < 0.5
