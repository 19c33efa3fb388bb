"""scikit-learn estimators, converted by skl2onnx; classifiers output ``probabilities`` first."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import onnx

from inferno.errors import MissingExtraError, ModelLoadError
from inferno.models import data
from inferno.models.loaders.base import BATCH, OPSET, LoadRequest, failure, finish, store
from inferno.models.loaders.onnx import leading_dims
from inferno.models.model import Model
from inferno.models.signature import Task


def from_estimator(estimator: Any, request: LoadRequest, name: str) -> Model:
    """Convert with skl2onnx: float32 features ``[batch, n_features_in_]``, no ZipMap."""
    try:
        from skl2onnx import to_onnx
        from skl2onnx.common.data_types import FloatTensorType
        from sklearn.base import is_classifier
    except ImportError as exc:
        raise MissingExtraError("scikit-learn and skl2onnx", "torch",
                                "loading a scikit-learn model") from exc
    features = getattr(estimator, "n_features_in_", None)
    if features is None:
        raise ModelLoadError(f"'{request.ref}': expected a fitted estimator, got an unfitted "
                             f"{type(estimator).__name__} (it has no n_features_in_)")
    classifier = is_classifier(estimator)

    def build(folder: Path) -> None:
        try:
            graph = to_onnx(estimator, initial_types=[("input", FloatTensorType([None, features]))],
                            options={id(estimator): {"zipmap": False}} if classifier else None,
                            target_opset=OPSET)
        except Exception as exc:  # skl2onnx raises RuntimeError, MissingShapeCalculator, ...
            raise ModelLoadError(f"'{request.ref}': skl2onnx cannot convert "
                                 f"{type(estimator).__name__}: {failure(exc)}") from exc
        outputs = sorted(graph.graph.output, key=lambda o: o.name != "probabilities")
        del graph.graph.output[:]  # probabilities first: the output accuracy is computed on
        graph.graph.output.extend(outputs)
        for _, dim in leading_dims(graph):  # skl2onnx leaves the batch axis unnamed
            dim.dim_param = BATCH
        onnx.save(graph, str(folder / "model.onnx"))

    path = store(build, request)
    model = finish(request, path, name,
                    task=Task.CLASSIFICATION if classifier else Task.REGRESSION,
                    description=f"scikit-learn {type(estimator).__name__} from {request.ref}")
    labels = model.eval_data.labels
    if classifier and labels is not None:  # accuracy compares them with argmax(probabilities)
        indices = data.label_indices(labels, estimator.classes_, f"--data {request.data}")
        model.eval_data = replace(model.eval_data, labels=indices)
    return model
