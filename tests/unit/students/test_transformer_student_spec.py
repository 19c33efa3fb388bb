"""Transformer students, the pure parts: spec parsing, shares, layer choice, data split and
augmentation, weight slicing and the embedding figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inferno.errors import ConfigError
from inferno.models.model import EvalData, Model
from inferno.models.signature import Signature, Task
from inferno.students import _bert_prune, _text_distill
from inferno.students.transformer_student import (
    alternate_layers,
    embedding_figures,
    parse_text_spec,
    prune_text,
)


@pytest.mark.parametrize(("spec", "layers"), [
    (None, (1, 3, 5)), ("layers=3", (1, 3, 5)), ("layers=2", (2, 5)), ("layers = 1", (5,)),
    ("layers=0,2,4", (0, 2, 4)), ("layers=0,5", (0, 5)), ("layers=5", (0, 1, 3, 4, 5)),
])
def test_parse_text_spec(spec: str | None, layers: tuple[int, ...]) -> None:
    assert parse_text_spec(spec, 6).layers == layers


@pytest.mark.parametrize(("spec", "words"), [
    ("layers=0", "a count from 1 to 5"), ("layers=6", "the teacher has 6 layers"),
    ("layers=three", "expected a count"), ("layers=3,1", "increasing distinct"),
    ("layers=1,1", "increasing distinct"), ("layers=0,6", "from 0 to 5"),
    ("depth=3", "unknown key 'depth'"), ("layers", "key=value"), ("layers=3;layers=2", "twice"),
    ("layers=-1,2", "increasing distinct"),
])
def test_bad_text_specs_name_the_spec_and_what_is_allowed(spec: str, words: str) -> None:
    with pytest.raises(ConfigError, match="student spec") as caught:
        parse_text_spec(spec, 6)
    assert spec.split(";")[0] in str(caught.value) and words in str(caught.value)


def _unloaded_teacher() -> Model:
    """Enough of a model for the checks that run before any loading."""
    return Model(name="minilm", onnx_path=Path("missing.onnx"), signature=Signature((), ()),
                 task=Task.EMBEDDING, eval_data=EvalData(["a", "b"]))


@pytest.mark.parametrize(("shares", "words"), [
    ({"heads": 1.0}, "--heads: expected a share"), ({"ffn": -0.1}, "--ffn: expected a share"),
    ({"heads": 0.0, "ffn": 0.0}, "above 0, got neither"), ({"ffn": 0.5, "epochs": 0}, "--epochs"),
])
def test_bad_prune_shares_are_config_errors(tmp_path: Path, shares: dict, words: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError, match=words):
        prune_text(_unloaded_teacher(), tmp_path / "out", **shares)


def test_alternate_layers_end_with_the_last() -> None:
    assert alternate_layers(3, 6) == (1, 3, 5)
    assert alternate_layers(6, 6) == (0, 1, 2, 3, 4, 5)
    assert _text_distill.layer_map(3, 12) == [3, 7, 11]


def test_kept_widths() -> None:
    assert _bert_prune.kept(12, 0.25) == 9 and _bert_prune.kept(12, 0.0) == 12
    assert _bert_prune.kept(12, 0.99) == 1  # at least one head stays
    assert _bert_prune.kept(1536, 0.5, 16) == 768 and _bert_prune.kept(1536, 0.3, 16) == 1072


def test_split_is_seeded_disjoint_and_holds_out_a_fifth() -> None:
    sentences = [f"sentence {i}" for i in range(50)]
    split = _text_distill.split_sentences(sentences, seed=0)
    assert len(split.held_out) == 10 and len(split.train) == 40
    assert not set(split.train) & set(split.held_out)
    assert _text_distill.split_sentences(sentences, seed=0) == split
    assert _text_distill.split_sentences(sentences, seed=1) != split


def test_augment_keeps_the_originals_and_is_seeded() -> None:
    sentences = ["the cat sat on the mat today", "a dog ran far away from home", "hello there"]
    texts = _text_distill.augment(sentences, copies=4, seed=0)
    assert texts[:3] == sentences and len(texts) == 15
    assert texts == _text_distill.augment(sentences, copies=4, seed=0)
    words = {w for s in sentences for w in s.split()}
    assert all(set(t.split()) <= words for t in texts)  # rearranged, never invented
    assert len(set(texts)) > 5


def test_slice_state_keeps_the_chosen_heads_and_neurons() -> None:
    torch = pytest.importorskip("torch")
    width, heads, inner, hidden = 2, 3, 4, 6
    prefix = "encoder.layer.0."
    state = {"embeddings.word_embeddings.weight": torch.zeros(5, hidden)}
    for name in _bert_prune.ATTENTION_ROWS:
        state[f"{prefix}{name}.weight"] = torch.arange(heads * width * hidden, dtype=torch.float32).view(heads * width, hidden)
        state[f"{prefix}{name}.bias"] = torch.arange(heads * width, dtype=torch.float32)
    state[f"{prefix}{_bert_prune.ATTENTION_COLUMNS}.weight"] = torch.arange(hidden * heads * width, dtype=torch.float32).view(hidden, heads * width)
    state[f"{prefix}{_bert_prune.FFN_ROWS}.weight"] = torch.arange(inner * hidden, dtype=torch.float32).view(inner, hidden)
    state[f"{prefix}{_bert_prune.FFN_ROWS}.bias"] = torch.arange(inner, dtype=torch.float32)
    state[f"{prefix}{_bert_prune.FFN_COLUMNS}.weight"] = torch.arange(hidden * inner, dtype=torch.float32).view(hidden, inner)
    sliced = _bert_prune.slice_state(state, [[0, 2]], [[1, 3]], width)
    query = state[f"{prefix}attention.self.query.weight"]
    assert torch.equal(sliced[f"{prefix}attention.self.query.weight"], query[[0, 1, 4, 5]])
    assert sliced[f"{prefix}attention.self.value.bias"].tolist() == [0, 1, 4, 5]
    out = state[f"{prefix}attention.output.dense.weight"]
    assert torch.equal(sliced[f"{prefix}attention.output.dense.weight"], out[:, [0, 1, 4, 5]])
    assert sliced[f"{prefix}intermediate.dense.bias"].tolist() == [1, 3]
    assert sliced[f"{prefix}output.dense.weight"].shape == (hidden, 2)
    assert query.shape == (heads * width, hidden)  # the original is left alone


def test_strongest_keeps_order() -> None:
    torch = pytest.importorskip("torch")
    assert _bert_prune.strongest(torch.tensor([0.5, 0.1, 0.9, 0.3]), 2) == [0, 2]


def test_embedding_figures() -> None:
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(12, 8))
    same = embedding_figures(teacher * 3.0, teacher)  # scale does not matter: rows are normalized
    assert same == {"cosine_mean": 1.0, "cosine_min": 1.0, "spearman": 1.0, "neighbour_agreement": 1.0}
    noisy = embedding_figures(teacher + rng.normal(scale=0.5, size=teacher.shape), teacher)
    assert 0.5 < noisy["cosine_mean"] < 1 and noisy["cosine_min"] < noisy["cosine_mean"]
    assert 0 < noisy["spearman"] < 1
    unrelated = embedding_figures(rng.normal(size=(12, 8)), teacher)
    assert abs(unrelated["cosine_mean"]) < 0.4 and abs(unrelated["spearman"]) < 0.5
