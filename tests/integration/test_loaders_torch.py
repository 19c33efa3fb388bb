"""load_model on PyTorch: ``module:attr`` references, TorchScript and ``torch.export`` files.

Every exported graph is run through ONNX Runtime at a batch size other than the one it was
traced at, and compared with PyTorch eager.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inferno.errors import (
    ModelLoadError,
    UntrustedPickleError,
)
from inferno.models.loaders import load_model
from inferno.models.signature import Task

from .loading import RNG, features, isolate, run_graph

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("skl2onnx")


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate(tmp_path, monkeypatch)


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
    x = features(5)
    (onnx_out,) = run_graph(model, {"features": x})
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
    (onnx_out,) = run_graph(model, feeds)
    assert model.torch_factory is not None
    with torch.no_grad():
        eager = model.torch_factory()(*(torch.from_numpy(v) for v in feeds.values())).numpy()
    np.testing.assert_allclose(onnx_out, eager, rtol=1e-5, atol=1e-6)


def test_torch_examples_from_data(tmp_path: Path) -> None:
    np.savez(tmp_path / "eval.npz", features=features(6), labels=np.arange(6) % 3)
    model = load_model("loader_models:no_examples", data=tmp_path / "eval.npz")
    assert model.signature.input_names == ("features",)
    assert len(model.eval_data) == 6 and model.eval_data.labels is not None


def test_torch_without_examples_explains_how_to_give_them() -> None:
    pattern = r"needs example inputs: pass --data FILE.npz .*\(features\).*example_inputs"
    with pytest.raises(ModelLoadError, match=pattern):
        load_model("loader_models:no_examples")


def test_torch_data_with_wrong_names(tmp_path: Path) -> None:
    np.savez(tmp_path / "eval.npz", pixels=features(6))
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
    np.savez(tmp_path / "eval.npz", features=features(4))
    model = load_model("scripted.pt", data=tmp_path / "eval.npz")
    assert model.name == "scripted"
    assert model.signature.input_names == ("features",)  # from the TorchScript schema
    (y,) = run_graph(model, {"features": features(9)})
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
                                  (torch.from_numpy(features(2)),), dynamic_shapes=shapes)
    torch.export.save(program, tmp_path / "program.pt2")
    with pytest.raises(UntrustedPickleError, match="--trust"):
        load_model("program.pt2")
    model = load_model("program.pt2", trust=True)
    assert model.name == "program" and model.signature.input_names == ("features",)
    (y,) = run_graph(model, {"features": features(7)})
    assert y.shape == (7, 3)
    # a program exported at a fixed batch refuses any other in eager mode: no baseline then
    assert (model.torch_factory is not None) is dynamic
    if model.torch_factory is not None:
        module = model.torch_factory().eval()
        with torch.no_grad():
            eager = module(torch.from_numpy(features(7)))
        assert eager.shape == (7, 3)


def test_torch_export_file_corrupt(tmp_path: Path) -> None:
    (tmp_path / "bad.pt2").write_bytes(b"not a zip")
    with pytest.raises(ModelLoadError, match=r"model file 'bad.pt2': expected a torch.export program"):
        load_model("bad.pt2", trust=True)
