"""``transformer_fusion``: ONNX Runtime's transformer optimizer (Python pattern fusions)."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import onnx
from pydantic import Field

from inferno.errors import PassError
from inferno.passes._io import PROTOBUF_LIMIT, check_model, translate_errors
from inferno.passes.base import Pass, PassContext, PassOptions, register

log = logging.getLogger(__name__)

ALIASES: dict[str, str] = {
    "roberta": "bert",
    "xlm-roberta": "bert",
    "camembert": "bert",
    "distilbert": "bert",
    "albert": "bert",
    "electra": "bert",
}
"""Hugging Face ``model_type`` → the ORT optimizer family whose fusions match its graph."""


@functools.cache
def known_model_types() -> frozenset[str]:
    """Model families ``onnxruntime.transformers.optimizer`` has fusion rules for."""
    from onnxruntime.transformers.optimizer import MODEL_TYPES

    return frozenset(MODEL_TYPES)


@register
class TransformerFusion(Pass):
    """Fuse transformer subgraphs into ORT contrib ops with ``optimize_model``.

    ORT's Python fusions recognize the exported patterns of attention, GELU, LayerNorm and
    embeddings and replace them with ``Attention``, ``BiasGelu``/``FastGelu``,
    ``SkipLayerNormalization`` and ``EmbedLayerNormalization`` (``com.microsoft`` domain, so
    only ONNX Runtime runs the result). It runs with ``opt_level=0``: fusions only, because
    ORT applies its own graph optimizations again when the session loads.

    After ``run`` the count of each fused op is in ``self.stats`` (and logged at debug).
    """

    name = "transformer_fusion"
    precision = "fp32"

    class Options(PassOptions):
        model_type: str | None = None
        """ORT optimizer family (``bert``, ``bart``, ``gpt2``, ...). None: the context's model
        type; when neither is known ``applies_to`` is False and ``run`` assumes ``bert``."""
        num_heads: int = Field(default=0, ge=0)
        """Attention heads; 0 takes ``ctx.attributes['num_heads']``, else ORT tries to read the
        graph — which fails on graphs whose reshape shapes are computed at run time (current
        PyTorch exports), and then attention is not fused."""
        hidden_size: int = Field(default=0, ge=0)
        """Hidden size; 0 takes ``ctx.attributes['hidden_size']``, else ORT tries the graph."""
        attention: bool = True
        """Fuse attention. Off keeps the exported attention subgraph (and, in ORT's BERT
        rules, also the embedding fusion, which it only applies next to a fused attention)."""
        use_gpu: bool = False
        """Fuse for ORT's CUDA EP: some fusions differ (e.g. attention kernels that only
        exist on the GPU), so a graph fused for the GPU is a separate variant."""
        raw_attention_mask: bool = True
        """Feed fused attention the 2-D 0/1 mask as exported. False uses ORT's BERT default,
        a 1-D mask index that is slightly faster but assumes right-side padding."""

    options: Options

    def __init__(self, options: PassOptions | None = None) -> None:
        super().__init__(options)
        self.stats: dict[str, int] = {}
        """Fused op type → node count in the written graph, filled by ``run``."""

    def _model_type(self, ctx: PassContext) -> str | None:
        model_type = self.options.model_type or ctx.model_type
        return ALIASES.get(model_type, model_type) if model_type else None

    def applies_to(self, model: onnx.ModelProto, ctx: PassContext) -> bool:
        """True when the model family is known (options or context) and ORT has rules for it."""
        model_type = self._model_type(ctx)
        return model_type is not None and model_type in known_model_types()

    def run(self, src: Path, dst: Path, ctx: PassContext) -> None:
        """Fuse ``src`` and write ``dst``; ``self.stats`` gets the fused-op counts.

        Raises:
            PassError: unknown model type, unreadable ``src``, or a failure inside ORT.
        """
        from onnxruntime.transformers.fusion_options import FusionOptions
        from onnxruntime.transformers.optimizer import optimize_model

        model_type = self._model_type(ctx) or "bert"
        if model_type not in known_model_types():
            raise PassError(
                f"{self.name}: model type {model_type!r} has no ORT fusion rules; "
                f"expected one of {sorted(known_model_types())}"
            )
        check_model(src, self.name)
        fusion = FusionOptions(model_type)
        fusion.enable_attention = self.options.attention
        if self.options.raw_attention_mask:
            fusion.use_raw_attention_mask(True)
        num_heads = self.options.num_heads or ctx.attributes.get("num_heads", 0)
        hidden_size = self.options.hidden_size or ctx.attributes.get("hidden_size", 0)
        with translate_errors(self.name, src):
            optimizer = optimize_model(
                str(src),
                model_type=model_type,
                num_heads=num_heads,
                hidden_size=hidden_size,
                optimization_options=fusion,
                opt_level=0,
                use_gpu=self.options.use_gpu,
            )
            self.stats = dict(optimizer.get_fused_operator_statistics())
            large = optimizer.model.ByteSize() > PROTOBUF_LIMIT
            optimizer.save_model_to_file(str(dst), use_external_data_format=large)
        log.debug(
            "%s fused ops on %s: %s", self.name, src, {k: v for k, v in self.stats.items() if v}
        )
        if (
            self.options.attention
            and not self._attention_fused()
            and not (num_heads and hidden_size)
        ):
            # Recent exporters compute reshape shapes at run time, so ORT cannot read the head
            # count from the graph and silently skips attention (and embedding) fusion.
            log.warning(
                "%s: no attention fused in %s; set num_heads and hidden_size "
                "(options or PassContext.attributes) if the model has attention",
                self.name,
                src,
            )

    def _attention_fused(self) -> bool:
        return any(
            self.stats.get(op, 0) for op in ("Attention", "MultiHeadAttention", "QOrderedAttention")
        )
