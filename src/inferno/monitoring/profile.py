"""Reference profiles: what a model's inputs and outputs looked like on the data it was built on.

``inferno accelerate`` writes one next to each plan (``profile.json``); the server compares a
sliding window of live traffic with it (:mod:`inferno.monitoring.drift`) and checks inputs
against it (:mod:`inferno.monitoring.validation`).

A profile is a set of per-row *features*, computed by a :class:`Summarizer` that runs the same
code on the reference data and on live traffic:

- tensor inputs: per-column values for narrow tables (≤ ``MAX_COLUMNS`` columns); reduced
  summaries (mean and standard deviation per row) for images and other wide tensors;
- text inputs: token count, unknown-token rate, and token-frequency buckets (the share of a
  sentence's tokens among the reference's ``FREQUENT_TOKENS`` most frequent, and the share
  never seen in the reference);
- classifier outputs: the predicted class and the confidence (the top probability's bin in a
  fixed histogram), both categorical;
- embeddings: projections on the reference's top ``PCA_COMPONENTS`` principal components, and
  the norm unless the model normalizes (a constant has no distribution to compare);
- other outputs: the per-row mean.

Each numeric feature keeps up to ``KEPT_SAMPLES`` reference values (for Kolmogorov–Smirnov)
and quantile bins (for PSI and Jensen–Shannon); a categorical one keeps its counts.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from inferno.errors import ModelLoadError
from inferno.models.model import Samples
from inferno.models.signature import Task

PROFILE_FILE = "profile.json"
KEPT_SAMPLES = 1000
"""Reference values kept per numeric feature; also the size up to which tests are used."""
BINS = 10
MAX_COLUMNS = 32
FREQUENT_TOKENS = 100
PCA_COMPONENTS = 5
CONFIDENCE_EDGES = (0.5, 0.6, 0.7, 0.8, 0.9)
"""Bins of the confidence histogram (a categorical feature: the bin of the top probability)."""
CATEGORICAL = ("class", "confidence")
CONSTANT_SPREAD = 1e-3
"""Embedding norms whose spread is below this share of their mean are left out (the model
normalizes). Other constant features stay: an unknown-token rate of 0 is worth watching."""

Tokenize = Callable[[list[str]], list[Any]]
"""Strings → ``tokenizers.Encoding`` objects (``ids``, ``special_tokens_mask``)."""
Features = dict[str, np.ndarray]
"""Per-row feature values of a batch, by feature name."""


@dataclass(frozen=True)
class FeatureReference:
    """One feature on the reference data."""

    name: str
    kind: str
    """``numeric`` or ``categorical``."""
    count: int
    values: tuple[float, ...] = ()
    """Numeric: up to KEPT_SAMPLES reference values (an even subsample when there were more)."""
    edges: tuple[float, ...] = ()
    """Numeric: interior quantile-bin edges."""
    proportions: tuple[float, ...] = ()
    """Numeric: reference share per bin (len(edges) + 1)."""
    categories: tuple[int, ...] = ()
    counts: tuple[int, ...] = ()
    """Categorical: reference count per category."""

    @classmethod
    def numeric(cls, name: str, values: np.ndarray) -> FeatureReference:
        values = np.asarray(values, dtype=np.float64)
        values = values[np.isfinite(values)]  # a missing value says nothing about the distribution
        if len(values) == 0:
            values = np.zeros(1)
        kept = values if len(values) <= KEPT_SAMPLES else values[np.linspace(0, len(values) - 1, KEPT_SAMPLES).astype(int)]
        edges = np.unique(np.quantile(values, np.linspace(0, 1, BINS + 1)[1:-1]))
        proportions = np.bincount(bin_index(values, edges), minlength=len(edges) + 1) / len(values)
        return cls(name, "numeric", len(values), tuple(kept.tolist()), tuple(edges.tolist()),
                   tuple(proportions.tolist()))

    @classmethod
    def categorical(cls, name: str, values: np.ndarray) -> FeatureReference:
        counted = Counter(np.asarray(values).astype(int).tolist())
        categories = tuple(sorted(counted))
        return cls(name, "categorical", len(values), categories=categories,
                   counts=tuple(counted[c] for c in categories))


def bin_index(values: np.ndarray, edges: Sequence[float] | np.ndarray) -> np.ndarray:
    """The bin of each value: bin i holds edges[i-1] < v <= edges[i]."""
    return np.searchsorted(np.asarray(edges), values, side="left")


@dataclass(frozen=True)
class TextReference:
    frequent_ids: tuple[int, ...]
    seen_ids: tuple[int, ...]
    unk_id: int | None


@dataclass(frozen=True)
class Projection:
    mean: tuple[float, ...]
    components: tuple[tuple[float, ...], ...]


@dataclass(frozen=True)
class ReferenceProfile:
    """What live traffic is compared with."""

    task: str
    input_kind: str
    """``text`` or ``tensor``."""
    output: str
    """The output whose rows are summarized."""
    samples: int
    source: str
    features: tuple[FeatureReference, ...]
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Tensor inputs: the smallest and largest value seen in the reference."""
    text: TextReference | None = None
    projection: Projection | None = None
    probabilities: bool = False
    """Classifier outputs are probabilities already (else a softmax gives the confidence)."""
    keep_norm: bool = False
    created: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def save(self, folder: Path) -> Path:
        path = Path(folder) / PROFILE_FILE
        path.write_text(json.dumps(asdict(self)))
        return path

    @classmethod
    def load(cls, folder: Path) -> ReferenceProfile | None:
        """The profile of a version folder; None when it has none (written before profiles existed)."""
        path = Path(folder) / PROFILE_FILE
        if not path.exists():
            return None
        try:
            data: dict[str, Any] = json.loads(path.read_text())
            features = tuple(FeatureReference(**_tuples(f)) for f in data.pop("features"))
            text, projection = data.pop("text"), data.pop("projection")
            ranges = {k: (float(lo), float(hi)) for k, (lo, hi) in data.pop("ranges").items()}
            return cls(
                features=features, ranges=ranges,
                text=TextReference(**_tuples(text)) if text else None,
                projection=Projection(tuple(projection["mean"]), tuple(map(tuple, projection["components"])))
                if projection else None,
                **data,
            )
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ModelLoadError(f"reference profile {path} is unreadable: {exc}") from exc


def _tuples(doc: dict[str, Any]) -> dict[str, Any]:
    """JSON lists back to the tuples the frozen dataclasses hold."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in doc.items()}


class Summarizer:
    """Per-row features of inputs and outputs, the same at profile time and at serving time."""

    def __init__(self, profile: ReferenceProfile, tokenize: Tokenize | None = None) -> None:
        if profile.input_kind == "text" and tokenize is None:
            raise ValueError("a text profile needs the model's tokenizer")
        self.profile = profile
        self.tokenize = tokenize
        self.names = profile.names
        self._frequent = np.array(profile.text.frequent_ids if profile.text else (), dtype=np.int64)
        self._seen = np.array(profile.text.seen_ids if profile.text else (), dtype=np.int64)
        if profile.projection is not None:
            self._mean = np.array(profile.projection.mean, dtype=np.float32)
            self._components = np.array(profile.projection.components, dtype=np.float32)

    def __call__(self, inputs: Samples, outputs: np.ndarray, encodings: list[Any] | None = None) -> np.ndarray:
        """A [rows, features] matrix in profile order (text: pass ``encodings`` if already tokenized)."""
        found = {**input_features(self.profile, inputs, self.tokenize, self._frequent, self._seen, encodings),
                 **self._outputs(np.asarray(outputs))}
        return np.stack([np.asarray(found[n], dtype=np.float64) for n in self.names], axis=1)

    def _outputs(self, outputs: np.ndarray) -> Features:
        p = self.profile
        return output_features(p.task, outputs, p.probabilities, p.keep_norm,
                               (self._mean, self._components) if p.projection else None)


def input_features(profile: ReferenceProfile, inputs: Samples, tokenize: Tokenize | None,
                   frequent: np.ndarray, seen: np.ndarray, encodings: list[Any] | None = None) -> Features:
    if profile.input_kind == "text":
        if encodings is None:
            if tokenize is None:
                raise ValueError("a text profile needs the model's tokenizer")
            encodings = tokenize(list(inputs))
        return text_features(encodings, frequent, seen,
                             profile.text.unk_id if profile.text else None)
    if not isinstance(inputs, dict):
        raise TypeError("a tensor profile takes a dict of arrays")
    return tensor_features(inputs)


def tensor_features(inputs: dict[str, np.ndarray]) -> Features:
    found: Features = {}
    for name, array in inputs.items():
        rows = np.asarray(array).reshape(len(array), -1).astype(np.float64)
        if np.asarray(array).ndim == 2 and rows.shape[1] <= MAX_COLUMNS:
            for j in range(rows.shape[1]):
                found[f"{name}[{j}]"] = rows[:, j]
        else:
            with np.errstate(invalid="ignore", over="ignore"):
                found[f"{name}.mean"] = rows.mean(axis=1)
                found[f"{name}.std"] = rows.std(axis=1)
    return found


def text_features(encodings: list[Any], frequent: np.ndarray, seen: np.ndarray,
                  unk_id: int | None) -> Features:
    """Per-sentence token statistics, in one vectorized pass over all the batch's tokens."""
    n = len(encodings)
    sizes = np.fromiter((len(e.ids) for e in encodings), np.int64, n)
    ids = np.fromiter(itertools.chain.from_iterable(e.ids for e in encodings), np.int64, int(sizes.sum()))
    special = np.fromiter(itertools.chain.from_iterable(e.special_tokens_mask for e in encodings),
                          np.int64, len(ids)).astype(bool)
    row = np.repeat(np.arange(n), sizes)[~special]
    ids = ids[~special]
    words = np.maximum(np.bincount(row, minlength=n), 1)

    def share(hit: np.ndarray) -> np.ndarray:
        return np.bincount(row, weights=hit, minlength=n) / words

    unknown = share(ids == unk_id) if unk_id is not None else np.zeros(n)
    return {"tokens.length": sizes.astype(np.float64), "tokens.unknown_rate": unknown,
            "tokens.frequent_share": share(np.isin(ids, frequent)),
            "tokens.unseen_share": share(~np.isin(ids, seen))}


def output_features(task: str, outputs: np.ndarray, probabilities: bool, keep_norm: bool,
                    projection: tuple[np.ndarray, np.ndarray] | None) -> Features:
    rows = outputs.reshape(len(outputs), -1).astype(np.float32)
    if task == Task.CLASSIFICATION and rows.shape[1] > 1:
        scores = rows if probabilities else _softmax(rows)
        # confidence as a histogram over fixed bins, not quantiles: a confident model's top
        # probabilities crowd near 1.0, where quantile bins become slivers that a harmless
        # 0.9999 → 0.999 change would flip
        return {"class": scores.argmax(axis=1), "confidence": bin_index(scores.max(axis=1), CONFIDENCE_EDGES)}
    if task == Task.EMBEDDING and projection is not None:
        mean, components = projection
        projected = (rows - mean) @ components.T
        found: Features = {f"embedding.pc{k + 1}": projected[:, k] for k in range(components.shape[0])}
        if keep_norm:
            found["embedding.norm"] = np.linalg.norm(rows, axis=1)
        return found
    return {"output.mean": rows.mean(axis=1)}


def _softmax(rows: np.ndarray) -> np.ndarray:
    shifted = np.exp(rows - rows.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def build_profile(task: Task | str, samples: Samples, outputs: np.ndarray, output_name: str, *,
                  tokenize: Tokenize | None = None, unk_id: int | None = None,
                  source: str = "") -> ReferenceProfile:
    """Profile the reference data: ``samples`` as the model takes them, ``outputs`` its main output.

    Args:
        task: the model's task (decides the output features).
        samples: a list of strings for text models (then ``tokenize`` is needed), else arrays by input name.
        outputs: the main output for every sample, rows first (what the served model returns).
        output_name: that output's name.
        tokenize: the model's tokenizer, for text.
        unk_id: the tokenizer's unknown token, for text (None: it has none).
        source: where the reference data came from, for the report.
    """
    task = str(task)
    outputs = np.asarray(outputs)
    rows = outputs.reshape(len(outputs), -1).astype(np.float32)
    text = None
    encodings = None
    ranges: dict[str, tuple[float, float]] = {}
    if isinstance(samples, dict):
        input_kind = "tensor"
        for name, array in samples.items():
            finite = np.asarray(array, dtype=np.float64)
            finite = finite[np.isfinite(finite)]
            if finite.size:
                ranges[name] = (float(finite.min()), float(finite.max()))
    else:
        if tokenize is None:
            raise ValueError("profiling text needs the model's tokenizer")
        input_kind = "text"
        encodings = tokenize(list(samples))
        text = _text_reference(encodings, unk_id)
    projection = _projection(rows) if task == Task.EMBEDDING else None
    probabilities = bool(task == Task.CLASSIFICATION and rows.min() >= 0
                         and np.allclose(rows.sum(axis=1), 1.0, atol=1e-3))
    norms = np.linalg.norm(rows, axis=1)
    keep_norm = bool(norms.std() > CONSTANT_SPREAD * max(float(norms.mean()), 1e-12))
    draft = ReferenceProfile(task, input_kind, output_name, len(rows), source, (), ranges, text, projection,
                             probabilities, keep_norm)
    summarize_in = input_features(draft, samples, tokenize,
                                  np.array(text.frequent_ids if text else (), dtype=np.int64),
                                  np.array(text.seen_ids if text else (), dtype=np.int64), encodings)
    if encodings is not None:
        summarize_in["tokens.unseen_share"] = _unseen_left_out(encodings)
    proj = (np.array(projection.mean, np.float32), np.array(projection.components, np.float32)) if projection else None
    found = {**summarize_in, **output_features(task, outputs, probabilities, keep_norm, proj)}
    features = tuple(
        FeatureReference.categorical(name, values) if name in CATEGORICAL else FeatureReference.numeric(name, values)
        for name, values in found.items()
    )
    return ReferenceProfile(task, input_kind, output_name, len(rows), source, features, ranges, text,
                            projection, probabilities, keep_norm,
                            datetime.now(UTC).isoformat(timespec="seconds"))


def _text_reference(encodings: list[Any], unk_id: int | None) -> TextReference:
    counted: Counter[int] = Counter()
    for e in encodings:
        counted.update(i for i, special in zip(e.ids, e.special_tokens_mask, strict=True) if not special)
    return TextReference(tuple(i for i, _ in counted.most_common(FREQUENT_TOKENS)), tuple(sorted(counted)), unk_id)


def _unseen_left_out(encodings: list[Any]) -> np.ndarray:
    """Each reference sentence's share of tokens that no *other* reference sentence has.

    Measured against the whole reference, every reference token is "seen" and the share is 0
    by construction, while new sentences from the same source always bring some new tokens:
    leaving each sentence out gives the share that same-source traffic really shows.
    """
    rows = [[i for i, special in zip(e.ids, e.special_tokens_mask, strict=True) if not special] for e in encodings]
    total: Counter[int] = Counter(i for ids in rows for i in ids)
    shares = np.zeros(len(rows))
    for r, ids in enumerate(rows):
        if ids:
            own = Counter(ids)
            shares[r] = sum(total[i] == own[i] for i in ids) / len(ids)
    return shares


def _projection(rows: np.ndarray) -> Projection:
    mean = rows.mean(axis=0)
    _, _, vt = np.linalg.svd(rows - mean, full_matrices=False)
    k = min(PCA_COMPONENTS, vt.shape[0])
    return Projection(tuple(mean.tolist()), tuple(tuple(c) for c in vt[:k].tolist()))
