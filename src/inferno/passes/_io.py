"""What every pass does at its edges: read a graph, write a graph, translate third-party errors."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import onnx

from inferno.errors import PassError

if TYPE_CHECKING:
    import onnxruntime as ort

log = logging.getLogger(__name__)

PROTOBUF_LIMIT = 2**31 - 1
"""A single protobuf message cannot exceed 2 GiB; larger graphs keep weights in external data."""


def require_file(src: Path, what: str) -> None:
    """Raise a ``PassError`` naming ``src`` when it is not a regular file.

    Raises:
        PassError: ``src`` does not exist or is a directory.
    """
    if not src.is_file():
        raise PassError(f"{what}: input model '{src}' does not exist or is not a file")


def load_model(src: Path, what: str, *, weights: bool = True) -> onnx.ModelProto:
    """Load the ONNX graph at ``src``; ``weights=False`` leaves external data on disk.

    Raises:
        PassError: ``src`` is missing or is not a readable ONNX model.
    """
    require_file(src, what)
    try:
        model = onnx.load(str(src), load_external_data=weights)
    except Exception as exc:  # protobuf's DecodeError, OSError, onnx's own errors
        raise PassError(
            f"{what}: '{src}' is not a readable ONNX model: {type(exc).__name__}: {exc}"
        ) from exc
    if not model.HasField("graph") or not model.opset_import:
        raise PassError(
            f"{what}: '{src}' is not an ONNX model: expected a graph and opset imports, found neither"
        )
    return model


def check_model(src: Path, what: str) -> None:
    """Fail early, with a message naming ``src``, when it is not a readable ONNX model.

    Raises:
        PassError: as ``load_model``.
    """
    load_model(src, what, weights=False)


def save_model(model: onnx.ModelProto, dst: Path) -> None:
    """Write ``model`` to ``dst``; weights go to ``<dst>.data`` when the graph exceeds 2 GiB."""
    large = model.ByteSize() > PROTOBUF_LIMIT
    onnx.save_model(
        model,
        str(dst),
        save_as_external_data=large,
        all_tensors_to_one_file=True,
        location=f"{dst.name}.data",
    )


@contextmanager
def translate_errors(what: str, src: Path) -> Iterator[None]:
    """Turn any exception raised by a third-party tool into a ``PassError`` naming ``src``.

    ONNX Runtime's tools raise bare ``Exception``, ``RuntimeError``, ``ValueError``,
    ``AssertionError`` and protobuf errors; callers get one type with the cause chained.
    """
    try:
        yield
    except PassError:
        raise
    except Exception as exc:
        raise PassError(f"{what} failed on '{src}': {type(exc).__name__}: {exc}") from exc


def cpu_session(model: Path | bytes, threads: int) -> ort.InferenceSession:
    """An ONNX Runtime CPU session with ``threads`` intra-op threads (one inter-op thread)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: quantized graphs trigger harmless fusion notes
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


QDQ_AXIS_OPSET = 13
"""First default-domain opset whose ``QuantizeLinear``/``DequantizeLinear`` take ``axis``:
per-channel QDQ graphs need it (ORT's static quantizer writes ``axis`` regardless)."""


def default_opset(model: onnx.ModelProto) -> int | None:
    """The graph's default-domain (``ai.onnx``) opset version, or None when it imports none."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def require_qdq_axis(model: onnx.ModelProto, what: str, src: Path) -> None:
    """Fail before quantizing when per-channel QDQ would write a graph ORT cannot load.

    Raises:
        PassError: the default-domain opset is below ``QDQ_AXIS_OPSET``.
    """
    opset = default_opset(model)
    if opset is not None and opset < QDQ_AXIS_OPSET:
        raise PassError(
            f"{what}: per-channel QDQ needs opset >= {QDQ_AXIS_OPSET}, '{src}' has opset "
            f"{opset}; run the 'prepare' pass first (or per_channel=False)"
        )


def op_types(model: onnx.ModelProto) -> set[str]:
    """Op types used by the main graph."""
    return {node.op_type for node in model.graph.node}


INTEGER_OPS = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "MatMulInteger",
        "ConvInteger",
        "MatMulIntegerToFloat",
        "DynamicQuantizeMatMul",
        "DynamicQuantizeLSTM",
        "QGemm",
        "QAttention",
        "MatMulNBits",
    }
)
"""Op types that compute or convert in integers; every ``QLinear*`` op counts too (see
``is_integer_op``). An ``int8`` label must be backed by some of these in the graph."""


def is_integer_op(op_type: str) -> bool:
    """True for the op types of ``INTEGER_OPS`` and for any ``QLinear*`` op (QLinearConv, ...)."""
    return op_type in INTEGER_OPS or op_type.startswith("QLinear")


def _nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _nodes(sub)


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Node count by op type, over the main graph and every subgraph (If/Loop/Scan bodies)."""
    counts: dict[str, int] = {}
    for node in _nodes(model.graph):
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def integer_op_count(counts: dict[str, int]) -> int:
    """How many of the nodes counted in ``counts`` (see ``op_counts``) are integer ops."""
    return sum(n for op, n in counts.items() if is_integer_op(op))
