"""ONNX files: used in place, unless every input's batch axis is fixed (then a dynamic copy is stored).

Also the graph checks the other loaders use: ``leading_dims`` (each input's and output's first
axis) and ``verify_batch`` (run a graph at a batch size it was not made at).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from inferno.errors import ModelLoadError
from inferno.models import data
from inferno.models.loaders.base import BATCH, LoadRequest, finish, read_onnx, reason, store
from inferno.models.model import Model
from inferno.models.signature import Signature

log = logging.getLogger(__name__)


def load_onnx(request: LoadRequest) -> Model:
    """Use the file in place, unless its batch axis is fixed: then store a dynamic copy."""
    path = request.file()
    graph = read_onnx(path, request.ref, check=True)
    if _fixed_batch(graph):
        external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.graph.initializer)
        dynamic = _make_batch_dynamic(onnx.load(str(path)), request.ref)  # weights and all
        if dynamic is not None:
            path = store(lambda folder: onnx.save(
                dynamic, str(folder / "model.onnx"), save_as_external_data=external), request)
    return finish(request, path, Path(request.ref).stem, probe=True)


def leading_dims(graph: onnx.ModelProto) -> Iterator[tuple[str, Any]]:
    """(name, first dim) of every graph input (not initializers) and output of rank >= 1."""
    initializers = {i.name for i in graph.graph.initializer}
    for value in [*graph.graph.input, *graph.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if value.name not in initializers and len(dims) > 0:
            yield value.name, dims[0]


def _fixed_batch(graph: onnx.ModelProto) -> dict[str, int]:
    """The leading sizes when every input's leading axis is fixed at one same size (a model
    exported at batch N); empty otherwise: a dynamic axis anywhere in front (``-1`` and
    unnamed axes included), or leading sizes that differ (``input [1, 576]`` beside ``state
    [2, 1, 128]``: axis 0 is not a batch axis there)."""
    initializers = {i.name for i in graph.graph.initializer}
    inputs = [v for v in graph.graph.input if v.name not in initializers]
    leading = {}
    for value in inputs:
        dims = value.type.tensor_type.shape.dim
        if len(dims) == 0:
            continue  # scalars (a sample rate) have no batch axis
        if not (dims[0].HasField("dim_value") and dims[0].dim_value > 0):
            return {}
        leading[value.name] = int(dims[0].dim_value)
    return leading if len(set(leading.values())) == 1 else {}


def _make_batch_dynamic(graph: onnx.ModelProto, ref: str) -> onnx.ModelProto | None:
    """A copy of ``graph`` whose fixed batch axes are dynamic, verified at batch 2; None (and a
    warning) when the graph hard-codes its batch size: it is then measured and served one
    fixed-size call at a time."""
    fixed = _fixed_batch(graph)
    copy = onnx.ModelProto()
    copy.CopyFrom(graph)
    for _, dim in leading_dims(copy):
        dim.dim_param = BATCH  # clears dim_value: the two are a oneof
    del copy.graph.value_info[:]  # inferred shapes would still say the old batch size
    feeds = data.synthetic_feeds(Signature.from_onnx(copy), n=2)
    try:  # zeros: only the shapes are checked, and zero is a valid token id
        verify_batch(copy, {k: np.zeros_like(v) for k, v in feeds.items()})
    except ModelLoadError as exc:
        log.warning(
            "model '%s' has a fixed batch axis %s that the graph hard-codes (%s): it is measured "
            "and served one call of that size at a time; re-export it with a dynamic batch "
            "axis (torch.onnx.export(..., dynamic_axes={'<input>': {0: 'batch'}})) to batch it",
            ref, fixed, exc)
        return None
    log.warning("model '%s' had a fixed batch axis %s; made it dynamic (checked at batch 2)",
                ref, fixed)
    return copy


def verify_batch(graph: onnx.ModelProto | Path, feeds: dict[str, np.ndarray]) -> None:
    """Run ``graph`` on ONNX Runtime; every output must have as many rows as the feeds."""
    import onnxruntime as ort

    rows = len(next(iter(feeds.values())))
    source = str(graph) if isinstance(graph, Path) else graph.SerializeToString()
    options = ort.SessionOptions()
    options.log_severity_level = 4  # the failure is reported by the caller, in its own words
    try:
        session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        outputs = session.run(None, feeds)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument types
        raise ModelLoadError(f"running it at batch {rows} failed: {reason(exc)}") from exc
    wrong = [list(o.shape) for o in outputs if o.ndim and o.shape[0] != rows]
    if wrong:
        raise ModelLoadError(f"at batch {rows} it returned outputs shaped {wrong}")
