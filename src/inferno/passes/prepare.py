"""``prepare``: make a third-party graph look like the graphs ORT's quantizers expect.

Exporters other than PyTorch's (Paddle2ONNX, older TensorFlow converters, hand-edited
graphs) keep weights in ``Constant`` nodes and stop at opset 11 or 12. Both defeat the
INT8 passes without an error:

- ORT's quantizers look for weights among the *initializers*: a MatMul or Conv whose weight
  is a ``Constant`` output is left in FP32, so "int8" graphs come out with no integer op.
- Per-channel QDQ writes ``DequantizeLinear(axis=...)``, an attribute that exists from
  opset 13 only: ORT's static quantizer writes it anyway and the graph fails to load.

This pass turns the main graph's ``Constant`` nodes into initializers of the same name (so
every consumer is unchanged) and upgrades a default-domain opset below 13 to 13 with ONNX's
version converter. Subgraphs of ``If``/``Loop``/``Scan`` are left as they are (they still
see the new initializers as outer-scope values). The result computes exactly what the
input computes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import onnx
from onnx import helper, version_converter

from inferno.errors import PassError
from inferno.passes._io import (
    QDQ_AXIS_OPSET,
    default_opset,
    load_model,
    save_model,
    translate_errors,
)
from inferno.passes.base import Pass, PassContext, register

log = logging.getLogger(__name__)

MIN_OPSET = QDQ_AXIS_OPSET
"""Default-domain opset the INT8 passes need (per-channel ``DequantizeLinear(axis=...)``)."""

DEFAULT_DOMAINS = ("", "ai.onnx")


def _constant_tensor(node: onnx.NodeProto) -> onnx.TensorProto | None:
    """The tensor a ``Constant`` node produces, named as its output; None for sparse values."""
    if len(node.attribute) != 1 or len(node.output) != 1:
        return None
    attr = node.attribute[0]
    if attr.name == "sparse_value":
        return None
    if attr.name == "value":
        tensor = onnx.TensorProto()
        tensor.CopyFrom(attr.t)
    else:
        value = helper.get_attribute_value(attr)
        kind = {
            "value_float": onnx.TensorProto.FLOAT,
            "value_floats": onnx.TensorProto.FLOAT,
            "value_int": onnx.TensorProto.INT64,
            "value_ints": onnx.TensorProto.INT64,
            "value_string": onnx.TensorProto.STRING,
            "value_strings": onnx.TensorProto.STRING,
        }.get(attr.name)
        if kind is None:
            return None
        scalar = not isinstance(value, list)
        tensor = helper.make_tensor(
            "", kind, [] if scalar else [len(value)], [value] if scalar else value
        )
    tensor.name = node.output[0]
    return tensor


def foldable_constants(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Main-graph ``Constant`` nodes that can become initializers (not graph outputs, not sparse)."""
    outputs = {o.name for o in model.graph.output}
    return [
        node
        for node in model.graph.node
        if node.op_type == "Constant"
        and node.domain in DEFAULT_DOMAINS
        and node.output
        and node.output[0] not in outputs
        and _constant_tensor(node) is not None
    ]


def constants_to_initializers(model: onnx.ModelProto) -> int:
    """Replace foldable ``Constant`` nodes with initializers of the same name, in place.

    Returns:
        How many nodes were replaced.
    """
    folded = foldable_constants(model)
    if not folded:
        return 0
    model.graph.initializer.extend(_constant_tensor(node) for node in folded)
    drop = {id(node) for node in folded}
    kept = [node for node in model.graph.node if id(node) not in drop]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return len(folded)


def upgrade_opset(model: onnx.ModelProto, what: str, src: Path) -> onnx.ModelProto:
    """``model`` converted to opset ``MIN_OPSET``, with an IR version ORT can load.

    The IR version is the input's, raised only as far as the new opset requires (the
    converter leaves it as it was, IR 6 with opset 13 being a pairing no onnx release made);
    never to the installed onnx's newest, which an older onnxruntime refuses.

    Raises:
        PassError: ONNX's version converter cannot convert one of the graph's ops.
    """
    before = default_opset(model)
    try:
        converted = version_converter.convert_version(model, MIN_OPSET)
    except Exception as exc:  # the converter raises RuntimeError/ValueError per op adapter
        raise PassError(
            f"{what}: cannot upgrade '{src}' from opset {before} to {MIN_OPSET} "
            f"(needed for per-channel INT8): {type(exc).__name__}: {str(exc).splitlines()[0]}"
        ) from exc
    needed = helper.find_min_ir_version_for(list(converted.opset_import), ignore_unknown=True)
    converted.ir_version = max(model.ir_version, needed)
    return converted


@register
class Prepare(Pass):
    """Constant-node weights become initializers; opsets below 13 are upgraded to 13.

    Numerically the identity: same inputs, outputs and values. Recipes that quantize run it
    first so that the INT8 passes find their weights; when there is nothing to do,
    ``applies_to`` is False and recipes skip it.
    """

    name = "prepare"
    precision = "fp32"

    def applies_to(self, model: onnx.ModelProto, ctx: PassContext) -> bool:
        """True when a main-graph ``Constant`` can become an initializer or the opset is below 13."""
        opset = default_opset(model)
        return (opset is not None and opset < MIN_OPSET) or bool(foldable_constants(model))

    def run(self, src: Path, dst: Path, ctx: PassContext) -> None:
        """Upgrade the opset if needed, fold Constant nodes into initializers, write ``dst``.

        Raises:
            PassError: ``src`` is unreadable, or its opset cannot be upgraded to 13.
        """
        model = load_model(src, self.name)
        opset = default_opset(model)
        if opset is not None and opset < MIN_OPSET:
            model = upgrade_opset(model, self.name, src)
            log.debug("%s: opset %d -> %d", self.name, opset, MIN_OPSET)
        with translate_errors(self.name, src):
            # After the upgrade: the converter's adapters may add Constant nodes of their own.
            folded = constants_to_initializers(model)
            save_model(model, dst)
        log.debug("%s: %d Constant node(s) became initializers", self.name, folded)
