"""Evaluation inputs: text ordered by length, timed batches spread from shortest to longest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, models, pre_tokenizers

from inferno.config import AccelerateConfig
from inferno.models.model import EvalData, Model
from inferno.models.signature import Signature, Task, TensorSpec
from inferno.models.text import TextPreprocessor
from inferno.tuning.accelerate import TIMING_BATCHES, _encode


def _text_model(tmp_path: Path, sentences: list[str]) -> Model:
    vocab = {"[PAD]": 0, "[UNK]": 1, **{f"w{i}": i + 2 for i in range(50)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.enable_padding(length=64)  # as MiniLM's tokenizer.json does: counts must ignore it
    tok.save(str(tmp_path / "tokenizer.json"))
    names = ("input_ids", "attention_mask", "token_type_ids")
    spec = tuple(TensorSpec(n, "int64", ("batch", "sequence")) for n in names)
    return Model(
        name="t", onnx_path=tmp_path / "none.onnx",
        signature=Signature(spec, (TensorSpec("e", "float32", ("batch", 4)),)),
        task=Task.EMBEDDING, eval_data=EvalData(sentences, np.arange(len(sentences))),
        preprocessor=TextPreprocessor(tmp_path / "tokenizer.json", 64, names),
    )


def test_text_is_ordered_by_length_and_timing_spans_the_mix(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 40, size=200)
    sentences = [" ".join(f"w{i % 50}" for i in range(n)) for n in lengths]
    inputs = _encode(_text_model(tmp_path, sentences), AccelerateConfig(batch_size=16, repeats=5))
    widths = [b["input_ids"].shape[1] for b in inputs.batches]
    assert widths == sorted(widths)  # padding only to the longest of similar lengths
    assert sum(len(b["input_ids"]) for b in inputs.batches) == 200
    timed = [b["input_ids"].shape[1] for b in inputs.timing_batches]
    assert len(timed) == TIMING_BATCHES
    assert timed[0] == widths[0] and timed[-1] == max(w for w, b in zip(widths, inputs.batches, strict=True)
                                                      if len(b["input_ids"]) == 16)
    # labels follow their samples through the reordering
    order = np.argsort(lengths, kind="stable")
    assert inputs.labels is not None
    np.testing.assert_array_equal(inputs.labels, np.arange(200)[order])
    assert len(inputs.singles) == 5 and all(len(s["input_ids"]) == 1 for s in inputs.singles)
