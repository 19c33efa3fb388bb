"""load_model on real files and references: ONNX, PyTorch, scikit-learn, and the bundled digits.

Every loaded graph is run through ONNX Runtime at a batch size other than the one it was
traced at, and compared with its source (PyTorch eager or scikit-learn) where there is one.
"""

from __future__ import annotations

import logging
import pickle
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from inferno.errors import (
    DataMismatchError,
    ModelLoadError,
    UnknownModelError,
    UntrustedPickleError,
    UserInputError,
)
from inferno.models.loaders import SUFFIX_LOADERS, infer_task, load_model
from inferno.models.model import Model
from inferno.models.signature import Task

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("skl2onnx")

HERE = Path(__file__).parent
RNG = np.random.default_rng(0)
W = RNG.normal(size=(4, 3)).astype(np.float32)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Own cache per test; ``loader_models`` importable; relative paths inside tmp_path."""
    monkeypatch.setenv("INFERNO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.chdir(tmp_path)


def _run(model: Model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(model.onnx_path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _tiny_onnx(path: Path, batch: int | str = "batch", *, reshape_to: int | None = None) -> Path:
    """x float32 [batch, 4] → MatMul → y float32 [batch, 3]; optionally a hard-coded Reshape."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])
    inits = [numpy_helper.from_array(W, "W")]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y" if reshape_to is None else "h"])]
    if reshape_to is not None:
        inits.append(numpy_helper.from_array(np.array([reshape_to, 3], np.int64), "shape"))
        nodes.append(helper.make_node("Reshape", ["h", "shape"], ["y"]))
    graph = helper.make_graph(nodes, "tiny", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _features(n: int) -> np.ndarray:
    return RNG.normal(size=(n, 4)).astype(np.float32)


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
    model = load_model(str(_tiny_onnx(Path("m.onnx"))))
    assert infer_task(model.signature) is Task.CLASSIFICATION
    one_column = replace(model.signature.outputs[0], shape=("batch", 1))
    assert infer_task(replace(model.signature, outputs=(one_column,))) is Task.OTHER
    assert infer_task(replace(model.signature, outputs=())) is Task.OTHER


# --- ONNX files -------------------------------------------------------------------------


def test_onnx_file_is_used_in_place(tmp_path: Path) -> None:
    path = _tiny_onnx(tmp_path / "tiny.onnx")
    model = load_model(str(path))
    assert model.onnx_path == path
    assert model.name == "tiny" and model.source == str(path)
    assert model.signature.inputs[0].describe() == "float32 [batch, 4]"
    assert model.task is Task.CLASSIFICATION  # float [batch, 3]
    assert model.eval_data.synthetic and len(model.eval_data) == 64
    assert model.torch_factory is None
    assert isinstance(model.eval_data.samples, dict)
    (y,) = _run(model, model.eval_data.samples)
    np.testing.assert_allclose(y, model.eval_data.samples["x"] @ W, rtol=1e-5, atol=1e-5)


def test_onnx_with_data_name_and_task(tmp_path: Path) -> None:
    path = _tiny_onnx(tmp_path / "tiny.onnx")
    np.savez(tmp_path / "eval.npz", x=_features(7).astype(np.float64), labels=np.arange(7) % 3)
    model = load_model(str(path), data=tmp_path / "eval.npz", name="renamed", task=Task.REGRESSION)
    assert model.name == "renamed" and model.task is Task.REGRESSION
    assert len(model.eval_data) == 7 and not model.eval_data.synthetic
    assert model.eval_data.source == "--data eval.npz"
    assert model.eval_data.labels is not None


def test_onnx_with_mismatching_data(tmp_path: Path) -> None:
    path = _tiny_onnx(tmp_path / "tiny.onnx")
    np.savez(tmp_path / "eval.npz", x=np.zeros((5, 6), np.float32))
    with pytest.raises(DataMismatchError, match=r"input 'x': expected float32 \[batch, 4\], got float32 \[5, 6\]"):
        load_model(str(path), data=tmp_path / "eval.npz")


def test_onnx_fixed_batch_is_made_dynamic(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _tiny_onnx(tmp_path / "fixed.onnx", batch=1)
    with caplog.at_level(logging.WARNING, logger="inferno.models.loaders"):
        model = load_model(str(path))
    assert "fixed batch axis" in caplog.text
    assert model.onnx_path != path and model.onnx_path.is_relative_to(tmp_path / "cache" / "imported")
    assert model.signature.inputs[0].shape == ("batch", 4)
    assert model.name == "fixed"
    (y,) = _run(model, {"x": _features(5)})
    assert y.shape == (5, 3)


def test_onnx_hard_coded_batch_is_kept_as_one_fixed_call(tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """A graph that hard-codes batch 1 is measured and served one call at a time, not refused."""
    path = _tiny_onnx(tmp_path / "hard.onnx", batch=1, reshape_to=1)
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
        good = _tiny_onnx(tmp_path / "good.onnx").read_bytes()
        content = good[: len(good) // 2]
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=f"model file '{path}'.*{reason}"):
        load_model(str(path))


def test_onnx_directory(tmp_path: Path) -> None:
    (tmp_path / "dir.onnx").mkdir()
    with pytest.raises(ModelLoadError, match="expected a file, got a directory"):
        load_model("dir.onnx")


# --- PyTorch: module:attr ---------------------------------------------------------------


def test_torch_module_reference() -> None:
    import loader_models

    model = load_model("loader_models:classifier")
    assert model.name == "classifier" and model.source == "loader_models:classifier"
    assert model.signature.input_names == ("features",)  # forward's parameter name
    assert model.signature.inputs[0].shape == ("batch", 4)
    assert model.signature.outputs[0].shape[0] == "batch"
    assert model.task is Task.CLASSIFICATION
    assert model.onnx_path.is_file()
    assert model.torch_factory is not None
    module = model.torch_factory()
    assert module is loader_models.classifier
    x = _features(5)
    (onnx_out,) = _run(model, {"features": x})
    with torch.no_grad():
        eager = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(onnx_out, eager, rtol=1e-5, atol=1e-6)


def test_torch_export_is_stored_once_by_content() -> None:
    first = load_model("loader_models:classifier")
    second = load_model("loader_models:classifier")
    assert first.onnx_path == second.onnx_path
    assert first.onnx_path.parent.parent.name == "imported"


def test_torch_workdir(tmp_path: Path) -> None:
    model = load_model("loader_models:classifier", workdir=tmp_path / "work")
    assert model.onnx_path == tmp_path / "work" / "model.onnx"


def test_torch_factory_and_text_axes() -> None:
    model = load_model("loader_models:make_pooler")
    assert model.name == "make_pooler"
    assert [s.describe() for s in model.signature.inputs] == [
        "int64 [batch, sequence]", "int64 [batch, sequence]",
    ]
    ids = RNG.integers(0, 100, size=(3, 11))
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    (onnx_out,) = _run(model, feeds)
    assert model.torch_factory is not None
    with torch.no_grad():
        eager = model.torch_factory()(*(torch.from_numpy(v) for v in feeds.values())).numpy()
    np.testing.assert_allclose(onnx_out, eager, rtol=1e-5, atol=1e-6)


def test_torch_examples_from_data(tmp_path: Path) -> None:
    np.savez(tmp_path / "eval.npz", features=_features(6), labels=np.arange(6) % 3)
    model = load_model("loader_models:no_examples", data=tmp_path / "eval.npz")
    assert model.signature.input_names == ("features",)
    assert len(model.eval_data) == 6 and model.eval_data.labels is not None


def test_torch_without_examples_explains_how_to_give_them() -> None:
    pattern = r"needs example inputs: pass --data FILE.npz .*\(features\).*example_inputs"
    with pytest.raises(ModelLoadError, match=pattern):
        load_model("loader_models:no_examples")


def test_torch_data_with_wrong_names(tmp_path: Path) -> None:
    np.savez(tmp_path / "eval.npz", pixels=_features(6))
    pattern = r"named like forward\(\)'s parameters \['features'\], got \['pixels'\]"
    with pytest.raises(ModelLoadError, match=pattern):
        load_model("loader_models:no_examples", data=tmp_path / "eval.npz")


def test_torch_hard_coded_batch_is_reported() -> None:
    pattern = r"expected the exported graph to take any batch size.*hard-codes its batch size"
    with pytest.raises(ModelLoadError, match=pattern):
        load_model("loader_models:fixed_batch")


def test_torch_forward_failure() -> None:
    pattern = (r"forward\(\) failed on the example inputs \['features: torch.float32 \[2, 4\]'\]: "
               r"RuntimeError: this forward always fails")
    with pytest.raises(ModelLoadError, match=pattern):
        load_model("loader_models:broken")


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("no_such_module_xyz:model", r"cannot import module 'no_such_module_xyz': "
                                     r"ModuleNotFoundError: No module named 'no_such_module_xyz'"),
        ("loader_models:nope", r"module 'loader_models' has no attribute 'nope'"),
        ("loader_models:failing_factory",
         r"calling it to build the model failed: ValueError: factory exploded"),
        ("loader_models:not_a_model",
         r"expected a torch.nn.Module, a scikit-learn estimator .*got builtins.dict"),
        ("loader_models:FEATURES", r"got builtins.int"),
    ],
    ids=["no-module", "no-attr", "factory-raises", "wrong-type", "int"],
)
def test_reference_errors(ref: str, message: str) -> None:
    with pytest.raises(ModelLoadError, match=message):
        load_model(ref)


def test_reference_from_working_directory(tmp_path: Path) -> None:
    (tmp_path / "cwd_model_mod.py").write_text(
        "import torch\n"
        "model = torch.nn.Sequential(torch.nn.Linear(4, 2))\n"
        "model.example_inputs = (torch.zeros(2, 4),)\n"
    )
    model = load_model("cwd_model_mod:model")  # found through the working directory
    assert model.signature.inputs[0].describe() == "float32 [batch, 4]"


# --- PyTorch: files ---------------------------------------------------------------------


def test_torchscript_file_with_data(tmp_path: Path) -> None:
    import loader_models

    torch.jit.script(loader_models.Classifier()).save(str(tmp_path / "scripted.pt"))
    np.savez(tmp_path / "eval.npz", features=_features(4))
    model = load_model("scripted.pt", data=tmp_path / "eval.npz")
    assert model.name == "scripted"
    assert model.signature.input_names == ("features",)  # from the TorchScript schema
    (y,) = _run(model, {"features": _features(9)})
    assert y.shape == (9, 3)
    assert model.torch_factory is not None


def test_torchscript_without_examples(tmp_path: Path) -> None:
    import loader_models

    torch.jit.script(loader_models.Classifier()).save(str(tmp_path / "scripted.ts"))
    with pytest.raises(ModelLoadError, match="needs example inputs"):
        load_model("scripted.ts")


def test_state_dict_is_not_a_model(tmp_path: Path) -> None:
    import loader_models

    torch.save(loader_models.Classifier().state_dict(), tmp_path / "weights.pth")
    pattern = r"expected TorchScript \(torch.jit.save\), got a file that torch.jit.load cannot"
    with pytest.raises(ModelLoadError, match=pattern):
        load_model("weights.pth")


@pytest.mark.parametrize("dynamic", [True, False], ids=["dynamic", "static"])
def test_torch_export_program(tmp_path: Path, dynamic: bool) -> None:
    import loader_models

    shapes = {"features": {0: torch.export.Dim("batch")}} if dynamic else None
    program = torch.export.export(loader_models.Classifier().eval(),
                                  (torch.from_numpy(_features(2)),), dynamic_shapes=shapes)
    torch.export.save(program, tmp_path / "program.pt2")
    with pytest.raises(UntrustedPickleError, match="--trust"):
        load_model("program.pt2")
    model = load_model("program.pt2", trust=True)
    assert model.name == "program" and model.signature.input_names == ("features",)
    (y,) = _run(model, {"features": _features(7)})
    assert y.shape == (7, 3)
    # a program exported at a fixed batch refuses any other in eager mode: no baseline then
    assert (model.torch_factory is not None) is dynamic
    if model.torch_factory is not None:
        module = model.torch_factory().eval()
        with torch.no_grad():
            eager = module(torch.from_numpy(_features(7)))
        assert eager.shape == (7, 3)


def test_torch_export_file_corrupt(tmp_path: Path) -> None:
    (tmp_path / "bad.pt2").write_bytes(b"not a zip")
    with pytest.raises(ModelLoadError, match=r"model file 'bad.pt2': expected a torch.export program"):
        load_model("bad.pt2", trust=True)


# --- scikit-learn -----------------------------------------------------------------------


def test_sklearn_classifier_reference() -> None:
    import loader_models

    model = load_model("loader_models:logistic")
    assert model.task is Task.CLASSIFICATION and model.torch_factory is None
    assert [(o.name, o.describe()) for o in model.signature.outputs] == [
        ("probabilities", "float32 [batch, 3]"), ("label", "int64 [batch]"),
    ]
    assert model.signature.inputs[0].describe() == "float32 [batch, 4]"
    x = _features(8)
    probabilities, label = _run(model, {model.signature.input_names[0]: x})
    np.testing.assert_allclose(probabilities, loader_models.logistic.predict_proba(x), atol=1e-5)
    np.testing.assert_array_equal(label, loader_models.logistic.predict(x))


def test_sklearn_regressor_reference() -> None:
    import loader_models

    model = load_model("loader_models:regression")
    assert model.task is Task.REGRESSION
    x = _features(5)
    (y,) = _run(model, {"input": x})
    np.testing.assert_allclose(y.reshape(-1), loader_models.regression.predict(x), rtol=1e-4, atol=1e-4)


def test_sklearn_labels_become_class_indices(tmp_path: Path) -> None:
    import loader_models

    np.savez(tmp_path / "eval.npz", input=loader_models.X[:6],
             labels=np.array(["low", "mid", "high", "mid", "low", "high"]))
    model = load_model("loader_models:logistic_named", data=tmp_path / "eval.npz")
    assert loader_models.logistic_named.classes_.tolist() == ["high", "low", "mid"]
    assert model.eval_data.labels is not None
    assert model.eval_data.labels.tolist() == [1, 2, 0, 2, 1, 0]


def test_sklearn_unknown_labels(tmp_path: Path) -> None:
    np.savez(tmp_path / "eval.npz", input=_features(2), labels=np.array(["low", "huge"]))
    with pytest.raises(DataMismatchError, match=r"'labels': expected values among the classes .*got \['huge'\]"):
        load_model("loader_models:logistic_named", data=tmp_path / "eval.npz")


def test_sklearn_unfitted() -> None:
    with pytest.raises(ModelLoadError, match="expected a fitted estimator, got an unfitted LogisticRegression"):
        load_model("loader_models:unfitted")


@pytest.fixture
def pickled(tmp_path: Path) -> Path:
    import loader_models

    path = tmp_path / "clf.pkl"
    path.write_bytes(pickle.dumps(loader_models.logistic))
    return path


def test_pickle_needs_trust(pickled: Path) -> None:
    with pytest.raises(UntrustedPickleError) as info:
        load_model(str(pickled))
    message = str(info.value)
    assert "unpickling runs arbitrary code" in message
    assert "pass --trust only for files you made" in message


def test_pickle_with_trust(pickled: Path) -> None:
    model = load_model(str(pickled), trust=True)
    assert model.name == "clf" and model.task is Task.CLASSIFICATION


def test_joblib_with_trust(tmp_path: Path) -> None:
    import joblib
    import loader_models

    joblib.dump(loader_models.regression, tmp_path / "reg.joblib")
    model = load_model("reg.joblib", trust=True)
    assert model.task is Task.REGRESSION


def test_pickle_missing_comes_before_trust() -> None:
    with pytest.raises(ModelLoadError, match=r"model file 'gone\.pkl' does not exist"):
        load_model("gone.pkl")


def test_pickle_corrupt(tmp_path: Path) -> None:
    (tmp_path / "bad.pickle").write_bytes(b"\x80\x04garbage")
    with pytest.raises(ModelLoadError, match=r"model file 'bad\.pickle' cannot be unpickled"):
        load_model("bad.pickle", trust=True)


# --- bundled ----------------------------------------------------------------------------


def test_bundled_text_model_refuses_npz(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import inferno.models.loaders as loaders

    text_model = load_model(str(_tiny_onnx(tmp_path / "t.onnx")))
    text_model.preprocessor = type("Text", (), {"kind": "text"})()  # what is_text looks at
    monkeypatch.setattr(loaders, "load_bundled", lambda name: text_model)
    np.savez(tmp_path / "eval.npz", x=_features(2))
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
    (probabilities,) = _run(model, model.eval_data.samples)
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
    np.testing.assert_allclose(eager, _run(model, {"pixels": x})[0], rtol=1e-4, atol=1e-5)


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

