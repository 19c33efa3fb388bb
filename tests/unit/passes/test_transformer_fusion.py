"""``transformer_fusion``: ORT's transformer optimizer fuses the exported patterns exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from inferno.errors import PassError
from inferno.passes import TransformerFusion, make_pass

from .graphs import bert_feeds, bert_ffn_block, mlp, op_counts, random_feeds, save
from .support import context, run


def test_ffn_block_fuses_bias_gelu_and_skip_layer_norm(tmp_path: Path) -> None:
    model = bert_ffn_block()
    src, dst = save(model, tmp_path / "ffn.onnx"), tmp_path / "fused.onnx"
    fusion = make_pass("transformer_fusion")
    fusion.run(src, dst, context(model_type="bert"))
    assert op_counts(dst) == {"MatMul": 2, "BiasGelu": 1, "SkipLayerNormalization": 1}
    assert isinstance(fusion, TransformerFusion)
    assert fusion.stats["BiasGelu"] == 1
    assert fusion.stats["SkipLayerNormalization"] == 1
    assert fusion.stats["Attention"] == 0
    feeds = random_feeds(model, 3, seed=4)
    for ref, out in zip(run(src, feeds), run(dst, feeds), strict=True):
        np.testing.assert_allclose(out[0], ref[0], rtol=1e-5, atol=1e-5)


def test_stats_start_empty() -> None:
    assert make_pass("transformer_fusion").stats == {}


@pytest.mark.parametrize(
    ("option", "ctx_type", "expected"),
    [
        (None, None, False),
        (None, "bert", True),
        (None, "roberta", True),
        (None, "resnet", False),
        ("gpt2", None, True),
        ("bart", "resnet", True),
    ],
)
def test_applies_only_to_a_transformer_family_ort_knows(
    option: str | None, ctx_type: str | None, expected: bool
) -> None:
    fusion = make_pass("transformer_fusion", model_type=option)
    assert fusion.applies_to(mlp(), context(model_type=ctx_type)) is expected


def test_unknown_model_type_raises_pass_error_listing_the_known_ones(tmp_path: Path) -> None:
    src = save(bert_ffn_block(), tmp_path / "ffn.onnx")
    with pytest.raises(PassError, match=r"model type 'resnet'.*'bert'"):
        make_pass("transformer_fusion", model_type="resnet").run(
            src, tmp_path / "o.onnx", context()
        )


def _bert_outputs_match(src: Path, dst: Path) -> None:
    feeds = bert_feeds(2, batch=3, seq=7)
    # Padding on the right, on the left and a hole in the middle: the raw 2-D mask must survive fusion.
    mask = np.ones((3, 7), dtype=np.int64)
    mask[0, 5:] = 0
    mask[1, :2] = 0
    mask[2, 3] = 0
    feeds[1]["attention_mask"] = mask
    for ref, out in zip(run(src, feeds), run(dst, feeds), strict=True):
        for r, o in zip(ref, out, strict=True):
            np.testing.assert_allclose(o, r, rtol=1e-4, atol=1e-4)


def test_tiny_bert_fuses_attention_embeddings_gelu_and_layer_norms(
    tiny_bert_path: Path, tmp_path: Path
) -> None:
    dst = tmp_path / "fused.onnx"
    fusion = make_pass("transformer_fusion")
    fusion.run(
        tiny_bert_path,
        dst,
        context(model_type="bert", attributes={"num_heads": 2, "hidden_size": 32}),
    )
    counts = op_counts(dst)
    assert counts["Attention"] == 2
    assert counts["EmbedLayerNormalization"] == 1
    assert counts["SkipLayerNormalization"] == 4
    assert counts["BiasGelu"] == 2
    assert counts["MatMul"] == 6  # the Q/K/V and score MatMuls went into Attention
    assert {k: v for k, v in fusion.stats.items() if v} == {
        "Attention": 2,
        "EmbedLayerNormalization": 1,
        "SkipLayerNormalization": 4,
        "BiasGelu": 2,
    }
    _bert_outputs_match(tiny_bert_path, dst)


def test_attention_false_keeps_the_attention_subgraph(tiny_bert_path: Path, tmp_path: Path) -> None:
    dst = tmp_path / "fused.onnx"
    make_pass("transformer_fusion", attention=False, num_heads=2, hidden_size=32).run(
        tiny_bert_path, dst, context(model_type="bert")
    )
    counts = op_counts(dst)
    assert "Attention" not in counts
    assert counts["MatMul"] == op_counts(tiny_bert_path)["MatMul"]
    assert counts["SkipLayerNormalization"] == 4
    _bert_outputs_match(tiny_bert_path, dst)


def test_fused_graph_declares_the_contrib_domain(tiny_bert_path: Path, tmp_path: Path) -> None:
    dst = tmp_path / "fused.onnx"
    make_pass("transformer_fusion").run(tiny_bert_path, dst, context(model_type="bert"))
    assert "com.microsoft" in {o.domain for o in onnx.load(str(dst)).opset_import}


def test_without_head_count_attention_is_skipped_with_a_warning(
    tiny_bert_path: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fusion = make_pass("transformer_fusion")
    with caplog.at_level("WARNING", logger="inferno.passes.transformer_fusion"):
        fusion.run(tiny_bert_path, tmp_path / "fused.onnx", context(model_type="bert"))
    assert fusion.stats["Attention"] == 0
    assert "set num_heads and hidden_size" in caplog.text
