"""Measuring how much quantizing part of a graph changes its outputs, for ``mixed_precision``.

The error measure is the cosine similarity between the FP32 graph's outputs and the
candidate's, per sample: each output is split along its first (batch) axis, every sample
flattened, and the cosines averaged over samples; the score of a graph is the *worst*
output's mean (an output of rank 0 or 1 counts as a single sample). Cosine ignores a global
scale, which quantization rarely changes, and is what embedding and classification heads
consume, so 1 - cosine tracks the damage quantization does to the result.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx

from inferno.errors import PassError
from inferno.passes._io import cpu_session
from inferno.passes.base import Feeds

INDEXED_COMPONENT = re.compile(r"[._]\d+$")
"""A name component that numbers a repeated block: ``layer.3``, ``h.0``, ``block_11``."""


def sample_cosines(reference: np.ndarray, output: np.ndarray) -> np.ndarray:
    """Cosine similarity per sample (first axis) of two same-shaped arrays; NaN counts as 0."""
    rows = reference.shape[0] if reference.ndim > 1 else 1
    a = reference.reshape(rows, -1).astype(np.float64)
    b = output.reshape(rows, -1).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    both_zero = (np.linalg.norm(a, axis=1) == 0) & (np.linalg.norm(b, axis=1) == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosines = np.where(norms > 0, (a * b).sum(axis=1) / np.where(norms > 0, norms, 1.0), 0.0)
    cosines = np.where(both_zero, 1.0, cosines)
    return np.where(np.isfinite(cosines), cosines, 0.0)


class Evaluator:
    """Runs graphs on fixed feeds and scores them against the FP32 reference's outputs."""

    def __init__(self, reference: Path, feeds: Sequence[Feeds], threads: int) -> None:
        self.feeds = list(feeds)
        self.threads = threads
        self.reference = self._outputs(reference)
        first = self.reference[0]
        self.compared = [i for i, out in enumerate(first) if np.issubdtype(out.dtype, np.floating)]
        if not self.compared:
            raise PassError(
                f"'{reference}' has no floating-point output to compare quantized graphs on"
            )

    def _outputs(self, model: Path | bytes, limit: int | None = None) -> list[list[np.ndarray]]:
        session = cpu_session(model, self.threads)
        return [session.run(None, feed) for feed in self.feeds[:limit]]

    def cosine(self, model: Path | bytes, limit: int | None = None) -> float:
        """The worst output's mean per-sample cosine similarity to the reference.

        Args:
            model: a graph file, or a serialized graph.
            limit: score on the first ``limit`` batches only (None: all).
        """
        outputs = self._outputs(model, limit)
        scores = []
        for index in self.compared:
            pairs = zip(self.reference[: len(outputs)], outputs, strict=True)
            per_sample = [sample_cosines(ref[index], out[index]) for ref, out in pairs]
            scores.append(float(np.concatenate(per_sample).mean()))
        return min(scores)


def group_key(node_name: str, granularity: str) -> str:
    """The group a node belongs to: itself (``node``) or its layer (``layer``).

    A node's layer is its name's path up to and including the first numbered component
    (``/encoder/layer.3/attention/self/query/MatMul`` → ``/encoder/layer.3``); a name without
    one groups by its parent path (``/pooler/dense/Gemm`` → ``/pooler/dense``), and a name
    without ``/`` is its own group.
    """
    if granularity == "node" or "/" not in node_name:
        return node_name
    parts = node_name.split("/")
    for end, part in enumerate(parts[:-1]):
        if INDEXED_COMPONENT.search(part):
            return "/".join(parts[: end + 1])
    return node_name.rsplit("/", 1)[0]


def ensure_node_names(model: onnx.ModelProto) -> bool:
    """Give unnamed or duplicate-named nodes unique names (ORT selects nodes by name).

    Returns:
        True when a name changed.
    """
    seen: set[str] = set()
    changed = False
    for index, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.name or node.op_type}_inferno_{index}"
            changed = True
        seen.add(node.name)
    return changed


def _gemm_becomes_matmul(node: onnx.NodeProto) -> bool:
    """ORT's dynamic quantizer rewrites Gemm(alpha=1, beta=1, transA=0) as MatMul + Add."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    return bool(
        attrs.get("alpha", 1.0) == 1.0
        and attrs.get("beta", 1.0) == 1.0
        and attrs.get("transA", 0) == 0
    )


Candidate = tuple[str, str]
"""(name the quantizer selects the node by, name of the node in the graph)."""


def dynamic_candidates(model: onnx.ModelProto, op_types: Sequence[str]) -> list[Candidate]:
    """The nodes the dynamic quantizer would quantize.

    MatMuls count only with an initializer B (``MatMulConstBOnly``); a rewritable Gemm with an
    initializer B counts as the MatMul ORT turns it into, selected as ``<gemm>_MatMul``.
    """
    weights = {init.name for init in model.graph.initializer}
    found = []
    for node in model.graph.node:
        has_weight = len(node.input) > 1 and node.input[1] in weights
        if (
            node.op_type == "Gemm"
            and "MatMul" in op_types
            and has_weight
            and _gemm_becomes_matmul(node)
        ):
            found.append((f"{node.name}_MatMul", node.name))
        elif node.op_type in op_types and node.op_type != "Gemm" and has_weight:
            found.append((node.name, node.name))
    return found


def static_candidates(model: onnx.ModelProto, op_types: Sequence[str]) -> list[Candidate]:
    """The nodes of ``op_types``: the QDQ quantizer also quantizes activation × activation."""
    return [(node.name, node.name) for node in model.graph.node if node.op_type in op_types]
