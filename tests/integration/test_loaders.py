"""load_model: dispatch, ONNX files and the bundled models (digits, built and cached).

Every loaded graph is run through ONNX Runtime at a batch size other than the one it was
traced at, and compared with its source (PyTorch eager or scikit-learn) where there is one.
PyTorch sources are in ``test_loaders_torch``, scikit-learn and pickles in
``test_loaders_sklearn``.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest

from inferno.errors import (
    DataMismatchError,
    ModelLoadError,
    UnknownModelError,
    UserInputError,
)
from inferno.models.loaders import SUFFIX_LOADERS, infer_task, load_model
from inferno.models.model import Model
from inferno.models.signature import Task

from .loading import RNG, W, features, isolate, run_graph, tiny_onnx

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("skl2onnx")


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate(tmp_path, monkeypatch)


# --- dispatch ---------------------------------------------------------------------------


def test_suffix_registry_covers_every_documented_format() -> None:
    assert set(SUFFIX_LOADERS) == {
        ".onnx", ".pt", ".pth", ".ts", ".torchscript", ".pt2", ".pkl", ".pickle", ".joblib",
    }


def test_a_bare_name_is_an_unknown_bundled_model() -> None:
    with pytest.raises(UnknownModelError, match=r"unknown bundled model 'resnet9000': expected one of digits, minilm"):
        load_model("resnet9000")


@pytest.mark.parametrize("ref", ["model.foo", "dir/model", "1st.model"])
def test_unsupported_reference(ref: str) -> None:
    with pytest.raises(ModelLoadError) as info:
        load_model(ref)
    assert str(info.value) == (
        f"unsupported model '{ref}': expected an .onnx file, a TorchScript/torch.export file, "
        f"a pickle (with --trust), 'package.module:attr', or a bundled name (digits, minilm)"
    )


def test_infer_task_rule() -> None:
    model = load_model(str(tiny_onnx(Path("m.onnx"))))
    assert infer_task(model.signature) is Task.CLASSIFICATION
    one_column = replace(model.signature.outputs[0], shape=("batch", 1))
    assert infer_task(replace(model.signature, outputs=(one_column,))) is Task.OTHER
    assert infer_task(replace(model.signature, outputs=())) is Task.OTHER


# --- ONNX files -------------------------------------------------------------------------


def test_onnx_file_is_used_in_place(tmp_path: Path) -> None:
    path = tiny_onnx(tmp_path / "tiny.onnx")
    model = load_model(str(path))
    assert model.onnx_path == path
    assert model.name == "tiny" and model.source == str(path)
    assert model.signature.inputs[0].describe() == "float32 [batch, 4]"
    assert model.task is Task.CLASSIFICATION  # float [batch, 3]
    assert model.eval_data.synthetic and len(model.eval_data) == 64
    assert model.torch_factory is None
    assert isinstance(model.eval_data.samples, dict)
    (y,) = run_graph(model, model.eval_data.samples)
    np.testing.assert_allclose(y, model.eval_data.samples["x"] @ W, rtol=1e-5, atol=1e-5)


def test_onnx_with_data_name_and_task(tmp_path: Path) -> None:
    path = tiny_onnx(tmp_path / "tiny.onnx")
    np.savez(tmp_path / "eval.npz", x=features(7).astype(np.float64), labels=np.arange(7) % 3)
    model = load_model(str(path), data=tmp_path / "eval.npz", name="renamed", task=Task.REGRESSION)
    assert model.name == "renamed" and model.task is Task.REGRESSION
    assert len(model.eval_data) == 7 and not model.eval_data.synthetic
    assert model.eval_data.source == "--data eval.npz"
    assert model.eval_data.labels is not None


def test_onnx_with_mismatching_data(tmp_path: Path) -> None:
    path = tiny_onnx(tmp_path / "tiny.onnx")
    np.savez(tmp_path / "eval.npz", x=np.zeros((5, 6), np.float32))
    with pytest.raises(DataMismatchError, match=r"input 'x': expected float32 \[batch, 4\], got float32 \[5, 6\]"):
        load_model(str(path), data=tmp_path / "eval.npz")


def test_onnx_fixed_batch_is_made_dynamic(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tiny_onnx(tmp_path / "fixed.onnx", batch=1)
    with caplog.at_level(logging.WARNING, logger="inferno.models.loaders"):
        model = load_model(str(path))
    assert "fixed batch axis" in caplog.text
    assert model.onnx_path != path and model.onnx_path.is_relative_to(tmp_path / "cache" / "imported")
    assert model.signature.inputs[0].shape == ("batch", 4)
    assert model.name == "fixed"
    (y,) = run_graph(model, {"x": features(5)})
    assert y.shape == (5, 3)


def test_onnx_hard_coded_batch_is_kept_as_one_fixed_call(tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """A graph that hard-codes batch 1 is measured and served one call at a time, not refused."""
    path = tiny_onnx(tmp_path / "hard.onnx", batch=1, reshape_to=1)
    with caplog.at_level(logging.WARNING, logger="inferno.models.loaders"):
        model = load_model("hard.onnx")
    assert "fixed batch axis {'x': 1} that the graph hard-codes" in caplog.text
    assert model.onnx_path.resolve() == path.resolve()  # the graph as it is
    assert not model.signature.batched
    assert model.shapes == {"x": (1, 4)}
    feeds = model.preprocessor.encode(model.eval_data.take(3).samples)
    assert feeds["x"].shape == (1, 4)  # one call is one fixed-size sample


def test_onnx_missing() -> None:
    with pytest.raises(ModelLoadError) as info:
        load_model("x.onnx")
    assert str(info.value) == "model file 'x.onnx' does not exist"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (RNG.bytes(2000), "expected an ONNX model, got bytes that do not parse as one"),
        (b"", "is not a valid ONNX model"),
        (None, "expected an ONNX model, got bytes that do not parse as one"),  # truncated
    ],
    ids=["random-bytes", "empty", "truncated"],
)
def test_onnx_corrupt(tmp_path: Path, content: bytes | None, reason: str) -> None:
    path = tmp_path / "bad.onnx"
    if content is None:
        good = tiny_onnx(tmp_path / "good.onnx").read_bytes()
        content = good[: len(good) // 2]
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=f"model file '{path}'.*{reason}"):
        load_model(str(path))


def test_onnx_directory(tmp_path: Path) -> None:
    (tmp_path / "dir.onnx").mkdir()
    with pytest.raises(ModelLoadError, match="expected a file, got a directory"):
        load_model("dir.onnx")


# --- bundled ----------------------------------------------------------------------------


def test_bundled_text_model_refuses_npz(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import inferno.models.loaders as loaders

    text_model = load_model(str(tiny_onnx(tmp_path / "t.onnx")))
    text_model.preprocessor = type("Text", (), {"kind": "text"})()  # what is_text looks at
    monkeypatch.setattr(loaders, "load_bundled", lambda name: text_model)
    np.savez(tmp_path / "eval.npz", x=features(2))
    with pytest.raises(UserInputError, match="takes text and brings its own sentences"):
        load_model("minilm", data=tmp_path / "eval.npz")


@pytest.fixture(scope="module")
def digits_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One digits build for this module, outside the session cache that other tests share."""
    folder = tmp_path_factory.mktemp("digits-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("INFERNO_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture
def digits_env(digits_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("INFERNO_CACHE_DIR", str(digits_cache))  # over the per-test cache
    return digits_cache


def _digits_accuracy(model: Model) -> float:
    assert isinstance(model.eval_data.samples, dict) and model.eval_data.labels is not None
    (probabilities,) = run_graph(model, model.eval_data.samples)
    return float((probabilities.argmax(axis=1) == model.eval_data.labels).mean())


@pytest.mark.slow
def test_digits_builds_and_reaches_its_accuracy(digits_env: Path) -> None:
    model = load_model("digits")
    assert model.onnx_path.is_relative_to(digits_env / "digits")
    assert model.name == "digits" and model.source == "bundled:digits"
    assert model.task is Task.CLASSIFICATION
    assert [s.describe() for s in model.signature.inputs] == ["float32 [batch, 1, 8, 8]"]
    assert [(s.name, s.describe()) for s in model.signature.outputs] == [
        ("probabilities", "float32 [batch, 10]"),
    ]
    assert model.eval_data.source == "digits test split (20%, 360 images)"
    assert len(model.eval_data) == 360 and model.calibration is not None
    assert len(model.calibration) == 1437 and model.calibration.labels is None
    assert _digits_accuracy(model) >= 0.97
    assert model.torch_factory is not None
    module = model.torch_factory()
    assert not module.training
    x = model.eval_data.samples["pixels"][:16]  # type: ignore[call-overload]
    with torch.no_grad():
        eager = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(eager, run_graph(model, {"pixels": x})[0], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_digits_second_load_is_a_cache_hit(digits_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from inferno.models.zoo import digits

    first = load_model("digits")
    builds: list[Path] = []
    monkeypatch.setattr(digits, "_build", builds.append)  # a second build would be recorded
    second = load_model("digits")
    assert builds == []  # no training: the cached graph is used as it is
    assert second.onnx_path == first.onnx_path


@pytest.mark.slow
def test_digits_data_and_name_overrides(digits_env: Path, tmp_path: Path) -> None:
    model = load_model("digits")
    assert isinstance(model.eval_data.samples, dict)
    x = model.eval_data.samples["pixels"][:20]
    np.savez(tmp_path / "mine.npz", pixels=x, labels=model.eval_data.labels[:20])  # type: ignore[index]
    mine = load_model("digits", data=tmp_path / "mine.npz", name="my-digits")
    assert mine.name == "my-digits" and len(mine.eval_data) == 20
    assert mine.eval_data.source == "--data mine.npz"
    assert mine.calibration is not None and model.calibration is not None
    assert mine.calibration.source == model.calibration.source  # only the eval data is replaced


@pytest.mark.slow
def test_digits_corrupt_cache_is_rebuilt(digits_env: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    built = load_model("digits")
    original = built.onnx_path.read_bytes()
    # corrupt a copy, so the module's shared build stays intact for the other tests
    copy_root = tmp_path / "copy"
    shutil.copytree(digits_env, copy_root)
    monkeypatch.setenv("INFERNO_CACHE_DIR", str(copy_root))
    corrupt = copy_root / built.onnx_path.relative_to(digits_env)
    corrupt.write_bytes(b"garbage")
    rebuilt = load_model("digits")
    assert rebuilt.onnx_path == corrupt
    assert onnx.load(str(rebuilt.onnx_path)).graph.output[0].name == "probabilities"
    assert _digits_accuracy(rebuilt) >= 0.97
    assert rebuilt.onnx_path.read_bytes() == original  # seeded, one thread: the same graph
