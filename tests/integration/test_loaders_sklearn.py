"""load_model on scikit-learn: estimator references and pickles (only with ``trust``).

Every converted graph is run through ONNX Runtime and compared with the estimator.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from inferno.errors import (
    DataMismatchError,
    ModelLoadError,
    UntrustedPickleError,
)
from inferno.models.loaders import load_model
from inferno.models.signature import Task

from .loading import features, isolate, run_graph

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("skl2onnx")


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate(tmp_path, monkeypatch)


# --- scikit-learn -----------------------------------------------------------------------


def test_sklearn_classifier_reference() -> None:
    import loader_models

    model = load_model("loader_models:logistic")
    assert model.task is Task.CLASSIFICATION and model.torch_factory is None
    assert [(o.name, o.describe()) for o in model.signature.outputs] == [
        ("probabilities", "float32 [batch, 3]"), ("label", "int64 [batch]"),
    ]
    assert model.signature.inputs[0].describe() == "float32 [batch, 4]"
    x = features(8)
    probabilities, label = run_graph(model, {model.signature.input_names[0]: x})
    np.testing.assert_allclose(probabilities, loader_models.logistic.predict_proba(x), atol=1e-5)
    np.testing.assert_array_equal(label, loader_models.logistic.predict(x))


def test_sklearn_regressor_reference() -> None:
    import loader_models

    model = load_model("loader_models:regression")
    assert model.task is Task.REGRESSION
    x = features(5)
    (y,) = run_graph(model, {"input": x})
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
    np.savez(tmp_path / "eval.npz", input=features(2), labels=np.array(["low", "huge"]))
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
