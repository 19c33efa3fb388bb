"""The edge↔cloud cascade: answer on the edge when confident, forward the rest to the cloud.

A :class:`Cascade` runs a classifier in-process (``EdgeModel``: an ONNX Runtime CPU session
on an edge bundle, an ``.onnx`` file or anything ``load_model`` accepts) and sends the rows
whose confidence is below the threshold — top probability (``rule="top"``) or the margin
between the two best classes (``rule="margin"``) — to a v2 server in one request
(:class:`~inferno.edge.cloud.CloudClient`). Outputs that are logits (rows that are not
non-negative and summing to 1) go through a softmax first.

:func:`sweep` measures the trade-off: the edge once and the cloud once on every sample, then
for each threshold the share answered on the edge, the accuracy, and the mean latency per
request with a simulated network round trip (arithmetic in ``inferno.edge.sweep``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from inferno.edge.cloud import CloudClient
from inferno.edge.sweep import (
    DEFAULT_THRESHOLDS,
    RULES,
    CrossValidated,
    Rule,
    SweepPoint,
    SweepResult,
    as_probabilities,
    check_rule,
    check_threshold,
    confidence,
    evaluate,
    plot_sweep,
)
from inferno.errors import (
    CloudError,
    ConfigError,
    DataMismatchError,
    ModelLoadError,
    UserInputError,
)
from inferno.models.model import EvalData, Model, count_samples
from inferno.models.signature import Signature, TensorSpec

__all__ = [
    "DEFAULT_THRESHOLDS", "RULES", "Cascade", "CascadeEvaluation", "CascadeResult", "CloudClient", "CloudError", "CrossValidated",
    "EdgeModel", "SweepPoint", "SweepResult", "as_probabilities", "confidence", "evaluate", "evaluate_cascade",
    "load_edge", "plot_sweep", "sweep",
]

ProgressFn = Callable[[str, int, int], None]


class Cloud(Protocol):
    """What a cascade needs of the cloud (``CloudClient``, or a stand-in in unit tests)."""

    def infer(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Class scores ``[rows, classes]`` for these input rows."""
        ...


# -- the edge model --------------------------------------------------------------------------------


class EdgeModel:
    """A classifier run in-process by ONNX Runtime on the CPU: the edge side of a cascade.

    Build it with :func:`load_edge`. ``run`` returns class probabilities ``[rows, classes]``.
    """

    def __init__(self, path: Path, signature: Signature, *, name: str, threads: int = 1,
                 source: str | None = None, teacher: str | None = None, model: Model | None = None) -> None:
        from inferno.edge._ortformat import session

        if threads < 1:
            raise ConfigError(f"--threads {threads}: expected at least 1")
        self.path = path
        self.name = name
        self.signature = signature
        self.source = source
        """The model reference the edge was made from (its evaluation data comes from there)."""
        self.teacher = teacher
        self.threads = threads
        self.output, self.classes = probability_output(signature, name)
        self._model = model
        try:
            self._session = session(path, threads)
        except Exception as exc:  # ORT raises its own exception types for unreadable graphs
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ModelLoadError(f"edge model {path}: ONNX Runtime cannot load it ({reason})") from exc
        self._inputs = signature.input_names

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Class probabilities for the rows of ``feeds`` (softmax applied to logits)."""
        (scores,) = self._session.run([self.output], {k: feeds[k] for k in self._inputs})
        return as_probabilities(scores)

    def check(self, feeds: dict[str, np.ndarray]) -> int:
        """The number of rows; DataMismatchError naming the input when the feeds do not fit."""
        self.signature.check_feeds(feeds)
        rows = {name: len(array) for name, array in feeds.items()}
        if len(set(rows.values())) > 1:
            raise DataMismatchError(f"inputs: expected the same number of rows in every input, got {rows}")
        return next(iter(rows.values()))

    @property
    def cloud_model(self) -> str:
        """The model name the cloud most likely serves it under: the teacher's, else the source's."""
        for ref in (self.teacher, self.source):
            if ref and Path(ref).name == ref and Path(ref).suffix == "":
                return ref
        return self.name

    def eval_data(self, data: Path | None = None) -> EvalData:
        """Labelled evaluation data: ``data`` (an ``.npz`` of the inputs and ``labels``), else
        the source model's.

        Raises:
            UserInputError: no labels (synthesized data, or an ``.npz`` without ``labels``).
            DataMismatchError: the data does not fit the edge's inputs.
        """
        from inferno.models.data import load_npz
        from inferno.models.loaders import load_model

        if data is not None:
            found = load_npz(data, self.signature)
        else:
            model = self._model or (load_model(self.source) if self.source else None)
            if model is None:
                raise UserInputError(f"edge {self.name}: no evaluation data; expected --data FILE.npz "
                                     "with its inputs and 'labels'")
            found = model.eval_data
        where = f"--data {data}" if data is not None else f"the evaluation data of {self.source}"
        if found.labels is None or found.synthetic or not isinstance(found.samples, dict):
            raise UserInputError(f"{where}: expected labelled samples to score the cascade, got "
                                 f"{'unlabelled' if found.labels is None else 'synthesized'} data "
                                 "(--data FILE.npz with the inputs and 'labels')")
        self.check(found.samples)
        return found


def probability_output(signature: Signature, name: str) -> tuple[str, int]:
    """The first float ``[batch, classes]`` output and its class count.

    Raises:
        ConfigError: the model has no such output (it is not a classifier).
    """
    for spec in signature.outputs:
        if spec.dtype.startswith(("float", "bfloat")) and len(spec.shape) == 2 \
                and isinstance(spec.shape[1], int) and spec.shape[1] > 1:
            return spec.name, spec.shape[1]
    found = ", ".join(f"{o.name!r} {o.describe()}" for o in signature.outputs) or "no output"
    raise ConfigError(f"edge {name}: expected a classifier with a float [batch, classes] output of "
                      f"probabilities or logits, found {found}")


def load_edge(ref: str | Path, *, threads: int | None = None) -> EdgeModel:
    """The edge model named by ``ref``: an edge bundle folder (``manifest.json``), an ``.onnx``
    file, or anything ``load_model`` accepts (a bundled name, a student folder).

    Args:
        threads: intra-op threads (default: the bundle's, else 1).

    Raises:
        ConfigError: not a classifier, a text bundle, or a bad manifest.
        ModelLoadError: the reference cannot be loaded.
    """
    from inferno.edge.bundle import MANIFEST, is_bundle, read_manifest, source_ref, teacher_of
    from inferno.models.loaders import load_model

    folder = Path(ref)
    if is_bundle(folder):
        manifest = read_manifest(folder)
        kind = (manifest.get("preprocessor") or {}).get("kind", "tensor")
        if kind != "tensor":
            raise ConfigError(f"edge bundle {folder}: expected a tensor model (preprocessor kind 'tensor'), "
                              f"found {kind!r}; the cascade runs classifiers on tensors")
        try:
            signature = Signature(tuple(TensorSpec.from_dict(t) for t in manifest["inputs"]),
                                  tuple(TensorSpec.from_dict(t) for t in manifest["outputs"]))
            path = folder / str(manifest["model"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"edge bundle {folder}: {MANIFEST} lacks a valid {exc} entry") from None
        return EdgeModel(path, signature, name=str(manifest.get("name") or folder.name),
                         threads=threads or int(manifest.get("threads") or 1),
                         source=source_ref(manifest), teacher=manifest.get("teacher") or None)
    model = load_model(str(ref))
    return EdgeModel(model.onnx_path, model.signature, name=model.name, threads=threads or 1,
                     source=str(ref), teacher=teacher_of(str(ref)), model=model)


# -- the cascade -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CascadeResult:
    """One batch through the cascade."""

    probabilities: np.ndarray
    """``[rows, classes]``: the edge's where it was confident, the cloud's elsewhere."""
    on_edge: np.ndarray
    """``[rows]`` bool: answered by the edge."""
    confidence: np.ndarray
    """``[rows]``: the edge's confidence under the cascade's rule."""
    edge_s: float
    cloud_s: float
    """Seconds in the edge model, and waiting for the cloud (0 when nothing was forwarded)."""

    @property
    def edge_rows(self) -> int:
        return int(self.on_edge.sum())

    @property
    def cloud_rows(self) -> int:
        return int(len(self.on_edge) - self.on_edge.sum())


class Cascade:
    """Answer on the edge when its confidence reaches ``threshold``; forward the rest to ``cloud``
    in one request per batch.

    Args:
        edge: the edge model. cloud: the cloud client (or any ``Cloud``).
        threshold: 0..1; rows with confidence ≥ it stay on the edge.
        rule: ``top`` (highest probability) or ``margin`` (best minus second best).

    Raises:
        ConfigError: a threshold outside 0..1 or an unknown rule.
    """

    def __init__(self, edge: EdgeModel, cloud: Cloud, threshold: float, rule: Rule = "top") -> None:
        self.edge = edge
        self.cloud = cloud
        self.threshold = check_threshold(threshold)
        self.rule: Rule = check_rule(rule)

    # -- what a server needs of it (``inferno.serving.cascade.Router``) --------------------------

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """The edge's inputs, rows on axis 0."""
        return self.edge.signature.inputs

    @property
    def output(self) -> str:
        return self.edge.output

    @property
    def classes(self) -> int:
        return self.edge.classes

    def describe(self) -> dict[str, Any]:
        """The settings a served cascade shows in its metadata."""
        return {"threshold": self.threshold, "rule": self.rule, "edge": self.edge.name,
                "cloud": getattr(self.cloud, "url", None), "task": "classification"}

    def close(self) -> None:
        """Close the cloud client's connections (when it is a ``CloudClient``)."""
        if isinstance(self.cloud, CloudClient):
            self.cloud.close()

    def check_cloud(self) -> None:
        """Ask the cloud for its model's metadata and check it takes the edge's inputs and
        answers as many classes.

        Raises:
            CloudError: unreachable, or the model is not served there.
            ConfigError: the cloud's model does not match the edge's.
        """
        if not isinstance(self.cloud, CloudClient):
            return
        model = self.cloud.connect()
        expected = {t.name for t in self.edge.signature.inputs}
        found = {t.name for t in model.inputs}
        if expected != found:
            raise ConfigError(f"cloud model {model.name!r} at {self.cloud.url}: expected inputs "
                              f"{sorted(expected)} (the edge's), found {sorted(found)}")
        out = next(o for o in model.outputs if o.name == self.cloud.output)
        if out.shape[1] != self.edge.classes:
            raise ConfigError(f"cloud model {model.name!r} output {out.name!r}: expected {self.edge.classes} "
                              f"classes (the edge's), found {out.shape[1]}")

    def predict(self, batch: dict[str, np.ndarray]) -> CascadeResult:
        """Run a batch: the edge on every row, the cloud on the rows the edge is unsure of.

        Raises:
            DataMismatchError: the batch does not fit the edge's inputs.
            CloudError: rows had to be forwarded and the cloud failed.
        """
        self.edge.check(batch)
        started = time.perf_counter()
        probabilities = self.edge.run(batch)
        edge_s = time.perf_counter() - started
        conf = confidence(probabilities, self.rule)
        on_edge = conf >= self.threshold
        cloud_s = 0.0
        if not on_edge.all():
            forwarded = {k: np.ascontiguousarray(v[~on_edge]) for k, v in batch.items()}
            started = time.perf_counter()
            answer = as_probabilities(self.cloud.infer(forwarded))
            cloud_s = time.perf_counter() - started
            expected = (int((~on_edge).sum()), probabilities.shape[1])
            if answer.shape != expected:
                raise CloudError(f"the cloud answered {list(answer.shape)} for {expected[0]} forwarded rows, "
                                 f"expected {list(expected)}", getattr(self.cloud, "url", "the cloud"), 200)
            probabilities = probabilities.copy()
            probabilities[~on_edge] = answer
        return CascadeResult(probabilities, on_edge, conf, edge_s, cloud_s)


# -- measuring it ----------------------------------------------------------------------------------


class EdgeRunner(Protocol):
    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray: ...


def _timed_rows(run: Callable[[dict[str, np.ndarray]], np.ndarray], samples: dict[str, np.ndarray],
                batch_size: int, what: str, progress: ProgressFn | None) -> tuple[np.ndarray, np.ndarray]:
    """Every row's output and its share of its batch's wall time (ms), batch by batch."""
    n = count_samples(samples)
    outputs, times = [], np.empty(n)
    for start in range(0, n, batch_size):
        batch = {k: v[start:start + batch_size] for k, v in samples.items()}
        began = time.perf_counter()
        outputs.append(as_probabilities(run(batch)))
        stop = min(start + batch_size, n)
        times[start:stop] = (time.perf_counter() - began) * 1e3 / (stop - start)
        if progress is not None:
            progress(what, stop, n)
    return np.concatenate(outputs), times


def sweep(edge: EdgeRunner, cloud: Cloud, samples: dict[str, np.ndarray], labels: np.ndarray,
          thresholds: Sequence[float] = DEFAULT_THRESHOLDS, *, rule: Rule = "top", rtt_ms: float = 0.0, batch_size: int = 1,
          tolerance: float = 0.005, progress: ProgressFn | None = None) -> SweepResult:
    """Measure the cascade at every threshold from one edge pass and one cloud pass.

    The edge and the cloud each run once over all samples, ``batch_size`` rows per call (a
    request is one call; each row is charged its share of its call's time). Per threshold:
    share answered on the edge, overall accuracy, the edge's accuracy on its share, the
    cloud's on the rest, and mean latency per request = edge time + (not on edge) × (cloud
    time + ``rtt_ms``). The operating point is the highest edge share whose accuracy is
    within ``tolerance`` (a fraction: 0.005 = 0.5 point) of the cloud alone; a 2-fold
    cross-validated figure is reported beside it.

    Raises:
        ConfigError: a threshold outside 0..1, a bad rule, batch size, round trip or tolerance.
        CloudError: the cloud failed.
    """
    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size}: expected at least 1")
    check_rule(rule)
    for t in thresholds:
        check_threshold(t, "--thresholds")
    edge_probs, edge_ms = _timed_rows(edge.run, samples, batch_size, "edge", progress)
    cloud_probs, cloud_ms = _timed_rows(cloud.infer, samples, batch_size, "cloud", progress)
    return evaluate(edge_probs, cloud_probs, np.asarray(labels), edge_ms, cloud_ms, thresholds,
                    rule=rule, rtt_ms=rtt_ms, tolerance=tolerance)


@dataclass(frozen=True)
class CascadeEvaluation:
    """The cascade run for real at one threshold over labelled data."""

    threshold: float
    rule: str
    rows: int
    edge_share: float
    accuracy: float
    edge_accuracy: float | None
    cloud_accuracy: float | None
    mean_latency_ms: float
    """Measured edge + cloud time per request, plus ``rtt_ms`` for each forwarding request."""
    rtt_ms: float
    batch_size: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def evaluate_cascade(cascade: Cascade, samples: dict[str, np.ndarray], labels: np.ndarray, *,
                     batch_size: int = 1, rtt_ms: float = 0.0,
                     progress: ProgressFn | None = None) -> CascadeEvaluation:
    """Run ``cascade.predict`` over the samples, ``batch_size`` rows per request, and score it.

    Raises:
        CloudError: the cloud failed. DataMismatchError: the samples do not fit the edge.
    """
    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size}: expected at least 1")
    n = count_samples(samples)
    labels = np.asarray(labels)
    predicted, on_edge, latencies = np.empty(n, dtype=np.int64), np.empty(n, dtype=bool), []
    for start in range(0, n, batch_size):
        batch = {k: v[start:start + batch_size] for k, v in samples.items()}
        result = cascade.predict(batch)
        stop = start + len(result.on_edge)
        predicted[start:stop] = result.probabilities.argmax(axis=1)
        on_edge[start:stop] = result.on_edge
        latencies.append((result.edge_s + result.cloud_s) * 1e3 + (rtt_ms if result.cloud_rows else 0.0))
        if progress is not None:
            progress("cascade", stop, n)
    correct = predicted == labels
    return CascadeEvaluation(
        threshold=cascade.threshold, rule=cascade.rule, rows=n, edge_share=float(on_edge.mean()),
        accuracy=float(correct.mean()),
        edge_accuracy=float(correct[on_edge].mean()) if on_edge.any() else None,
        cloud_accuracy=float(correct[~on_edge].mean()) if not on_edge.all() else None,
        mean_latency_ms=float(np.mean(latencies)), rtt_ms=rtt_ms, batch_size=batch_size,
    )
