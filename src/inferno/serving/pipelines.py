"""What a served model does with a request: check it, run batches of it, shape the answer.

- ``TextPipeline``: a BYTES input of strings, tokenized in the server, padded per runtime
  call only to that call's longest sentence; returns L2-normalized embeddings.
- ``TensorPipeline``: the model's own tensors in the graph's layout (a classifier's
  probabilities, a stateful model's state in and out, a scalar setting).

``prepare`` runs on the event loop and must be cheap: it validates and decodes one request
into a :class:`Work`. ``execute`` runs in a batch worker thread on many works at once.
One pipeline serves one model instance (its own runtime session), so ``execute`` is never
called concurrently on the same pipeline. The request checks (``tensor_feeds``,
``requested_outputs``) are shared with the cascade handler (``serving.cascade``).
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inferno.errors import ModelLoadError, UserInputError
from inferno.models.signature import Signature, TensorSpec
from inferno.models.text import TextPreprocessor
from inferno.monitoring.profile import ReferenceProfile
from inferno.protocol.datatypes import datatype_of

# The wire's view of a tensor (``-1`` for a variable dimension); ``TensorSpec`` here is the
# graph's (models.signature), which metadata is derived from.
from inferno.protocol.metadata import TensorSpec as TensorMeta
from inferno.repository.plan import PlanRunner
from inferno.serving.protocol import InferRequest, OutputTensor, RequestedOutput

log = logging.getLogger(__name__)

TEXT_INPUT = "text"

Outputs = dict[str, np.ndarray]
"""One request's outputs by name, in the graph's layout (rows on each output's batch axis)."""


@dataclass(frozen=True)
class Work:
    """One request, checked and decoded, ready to be batched."""

    rows: int
    payload: Any
    """list[str] for text pipelines; dict of arrays for tensor pipelines."""
    outputs: tuple[RequestedOutput, ...]


@dataclass
class StageTimes:
    """Seconds spent preparing inputs, running the model and extracting outputs (Triton's split)."""

    input_s: float = 0.0
    infer_s: float = 0.0
    output_s: float = 0.0


class Pipeline(ABC):
    """One model instance behind the protocol."""

    inputs: tuple[TensorMeta, ...]
    outputs: tuple[TensorMeta, ...]

    def __init__(self, runner: PlanRunner) -> None:
        self.runner = runner
        self.times = StageTimes()
        self.batch_axes: dict[str, int | None] = {}
        """Each tensor's batch axis by name (None: one value per call); absent: axis 0."""

    @property
    def batch_first(self) -> bool:
        """Every tensor has its rows on a dynamic axis 0: the layout Triton's batching describes."""
        return True

    @abstractmethod
    def prepare(self, request: InferRequest) -> Work:
        """Check and decode one request (event loop; raise UserInputError naming the input)."""

    @abstractmethod
    def execute(self, works: list[Work]) -> list[Outputs]:
        """Run a batch of works; one ``Outputs`` per work, in order (worker thread)."""

    @abstractmethod
    def sample(self) -> Work:
        """A small valid work, for warm-up."""

    def requested(self, request: InferRequest) -> tuple[RequestedOutput, ...]:
        """The outputs a request asks for, checked against this model's."""
        return requested_outputs(self.outputs, request)

    def close(self) -> None:
        self.runner.close()


class Answer(list[OutputTensor]):
    """The tensors of one response, and its response-level ``parameters`` (the cascade's row
    counts; empty for a model's own outputs). A list, so that every encoder takes it as is."""

    def __init__(self, tensors: Sequence[OutputTensor] = (), parameters: Mapping[str, Any] | None = None) -> None:
        super().__init__(tensors)
        self.parameters: dict[str, Any] = dict(parameters or {})


def respond(work: Work, outputs: Outputs) -> Answer:
    """The response tensors for one work: raw, or top-k classes where asked."""
    tensors = []
    for out in work.outputs:
        data = outputs[out.name]
        if out.classification:
            data = top_k(data, out.classification)
        tensors.append(OutputTensor(out.name, data, out.binary))
    return Answer(tensors)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Triton's classification strings ``"score:index"``, best first, shape [rows, k]."""
    k = min(k, scores.shape[1])
    best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    out = np.empty(best.shape, dtype=object)
    for r, row in enumerate(best):
        for c, index in enumerate(row):
            out[r, c] = f"{float(scores[r, index]):.6f}:{int(index)}".encode()
    return out


def requested_outputs(outputs: Sequence[TensorMeta], request: InferRequest) -> tuple[RequestedOutput, ...]:
    """The outputs ``request`` asks for (all of ``outputs`` when it names none), checked against them.

    Raises:
        UserInputError: an unknown output, or classification asked of one that is not float [batch, classes].
    """
    known = {t.name: t for t in outputs}
    if request.outputs is None:
        return tuple(RequestedOutput(t.name, request.binary_output) for t in outputs)
    for out in request.outputs:
        meta = known.get(out.name)
        if meta is None:
            raise UserInputError(f"output {out.name!r}: expected one of {sorted(known)}, got an unknown name")
        if out.classification and (not meta.datatype.startswith("FP") or len(meta.shape) != 2):
            raise UserInputError(
                f"output {out.name!r}: classification needs a float [batch, classes] output, "
                f"this one is {meta.describe()}"
            )
    return request.outputs


def tensor_feeds(inputs: Sequence[TensorMeta], batch_axes: Mapping[str, int | None],
                 request: InferRequest) -> tuple[int, dict[str, np.ndarray]]:
    """The request's rows and its input arrays by name, checked against ``inputs``: every input
    present and no other, each of its datatype and shape, the same rows on every batch axis
    (``batch_axes``: None for an input without one; absent: axis 0), at least one row.

    Raises:
        UserInputError: naming the input, what was expected and what was found.
    """
    expected = [t.name for t in inputs]
    missing = [n for n in expected if n not in request.inputs]
    unknown = sorted(set(request.inputs) - set(expected))
    if missing or unknown:
        raise UserInputError(
            f"inputs: expected {expected}, got {sorted(request.inputs)}"
            + (f" (missing {missing})" if missing else "") + (f" (unknown {unknown})" if unknown else "")
        )
    feeds = {}
    rows: int | None = None
    first = ""
    for meta in inputs:
        tensor = request.inputs[meta.name]
        found = f"{tensor.datatype} {list(tensor.shape)}"
        if tensor.datatype != meta.datatype or len(tensor.shape) != len(meta.shape) or any(
            d != -1 and d != s for d, s in zip(meta.shape, tensor.shape, strict=True)
        ):
            raise UserInputError(f"input {meta.name!r}: expected {meta.describe()}, got {found}")
        axis = batch_axes.get(meta.name, 0)
        if axis is not None:
            if rows is not None and tensor.shape[axis] != rows:
                raise UserInputError(
                    f"input {meta.name!r}: expected batch {rows} on axis {axis} like input {first!r}, "
                    f"got {tensor.shape[axis]} ({found})"
                )
            if rows is None:
                rows, first = tensor.shape[axis], meta.name
        feeds[meta.name] = tensor.data
    if rows == 0:
        raise UserInputError(f"input {first!r}: expected at least one row, got 0")
    return rows or 1, feeds


def build_pipeline(runner: PlanRunner, group_by_length: bool = True) -> Pipeline:
    """The pipeline a plan calls for: text models get tokenization, others their tensors."""
    if isinstance(runner.preprocessor, TextPreprocessor):
        return TextPipeline(runner, runner.preprocessor, group_by_length)
    return TensorPipeline(runner)


def tensor_meta(spec: TensorSpec) -> TensorMeta:
    """``spec`` as model metadata shows it."""
    return TensorMeta(spec.name, datatype_of(spec.dtype),
                      tuple(d if isinstance(d, int) else -1 for d in spec.shape))


def batch_axis(spec: TensorSpec) -> int | None:
    """The axis of ``spec`` that holds rows, when that axis is dynamic; else None.

    A batch axis the graph fixes (``[1, 3, 224, 224]``, or a plan written before batch axes
    were recorded, which says 0 for every tensor) cannot take more rows: such a tensor is
    treated as one value per call, so requests are never concatenated along it.
    """
    axis = spec.batch_axis
    if axis is None or not 0 <= axis < len(spec.shape) or isinstance(spec.shape[axis], int):
        return None
    return axis


SHARED_INPUT_LIMIT = 64
"""Most elements of an input without a batch axis (a sample rate) that requests may share a
runtime call over: such inputs must be equal to share it, and larger ones are not compared."""

WARMUP_SIZE = 8
"""The size of a dynamic non-batch axis at warm-up for plans that record no shapes."""


class TensorPipeline(Pipeline):
    """The model's tensors in and out, in the graph's layout (state in, state out).

    Each tensor's rows are on its own batch axis (``state [2, batch, 128]``: axis 1). Requests
    share a runtime call when every output has a batch axis, their non-batch sizes agree and
    their inputs without a batch axis (a sample rate) are equal: inputs are concatenated along
    their batch axes and the outputs split along theirs. Otherwise each request runs alone.
    """

    def __init__(self, runner: PlanRunner) -> None:
        super().__init__(runner)
        self.signature: Signature = runner.signature
        self.inputs = tuple(tensor_meta(s) for s in self.signature.inputs)
        self.outputs = tuple(tensor_meta(s) for s in self.signature.outputs)
        self.batch_axes = {s.name: batch_axis(s) for s in (*self.signature.inputs, *self.signature.outputs)}
        self._mergeable = (any(self.batch_axes[s.name] is not None for s in self.signature.inputs)
                           and all(self.batch_axes[s.name] is not None for s in self.signature.outputs))

    @property
    def batch_first(self) -> bool:
        return all(axis == 0 for axis in self.batch_axes.values())

    def prepare(self, request: InferRequest) -> Work:
        rows, feeds = tensor_feeds(self.inputs, self.batch_axes, request)
        return Work(rows, feeds, self.requested(request))

    def execute(self, works: list[Work]) -> list[Outputs]:
        results: list[Outputs | None] = [None] * len(works)
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, work in enumerate(works):
            groups.setdefault(self._group(i, work), []).append(i)
        names = [t.name for t in self.outputs]
        for members in groups.values():
            t0 = time.perf_counter()
            first = works[members[0]].payload
            feeds = first if len(members) == 1 else {
                name: first[name] if self.batch_axes[name] is None
                else np.concatenate([works[i].payload[name] for i in members], axis=self.batch_axes[name])
                for name in first
            }
            t1 = time.perf_counter()
            arrays = dict(zip(names, self.runner.runtime.run(feeds), strict=True))
            t2 = time.perf_counter()
            if len(members) == 1:
                results[members[0]] = arrays
            else:
                start = 0
                for i in members:
                    stop = start + works[i].rows
                    results[i] = {n: _rows(a, self.batch_axes[n], start, stop) for n, a in arrays.items()}
                    start = stop
            self._clock(t0, t1, t2)
        return [r for r in results if r is not None]

    def _group(self, i: int, work: Work) -> tuple[Any, ...]:
        """Works with the same key share a runtime call."""
        if not self._mergeable:
            return (i,)
        key: list[Any] = []
        for spec in self.signature.inputs:
            array = work.payload[spec.name]
            axis = self.batch_axes[spec.name]
            if axis is not None:
                key.append(array.shape[:axis] + array.shape[axis + 1:])
            elif array.size <= SHARED_INPUT_LIMIT and array.dtype != object:
                key.append((array.shape, array.tobytes()))
            else:
                return (i,)
        return tuple(key)

    def warmup_shapes(self) -> dict[str, tuple[int, ...]]:
        """The input shapes warm-up runs at: the plan's (one row, as ``accelerate`` measured
        it), else every dynamic axis 1 on the batch axis and ``WARMUP_SIZE`` elsewhere."""
        recorded = self.runner.plan.shapes
        shapes = {}
        for spec in self.signature.inputs:
            shape = recorded.get(spec.name)
            if shape is not None and len(shape) == len(spec.shape):
                shapes[spec.name] = tuple(int(d) for d in shape)
            else:
                shapes[spec.name] = tuple(d if isinstance(d, int) else (1 if j == spec.batch_axis else WARMUP_SIZE)
                                          for j, d in enumerate(spec.shape))
        return shapes

    def sample(self) -> Work:
        """One row at ``warmup_shapes()``, zeros, or the value nearest zero that the reference
        data had for inputs the version's profile saw away from zero (a sample rate of 16000).

        The profile's ranges are what a version folder keeps of its evaluation data: zeros
        suit most inputs, but a model may refuse zero where it expects a setting such as a
        sample rate.
        """
        ranges = _reference_ranges(self.runner.folder)
        shapes = self.warmup_shapes()
        feeds = {}
        for spec in self.signature.inputs:
            lo, hi = ranges.get(spec.name, (0.0, 0.0))
            value = np.asarray(min(max(0.0, lo), hi)).astype(spec.dtype)
            feeds[spec.name] = np.full(shapes[spec.name], value, dtype=spec.dtype)
        return Work(1, feeds, tuple(RequestedOutput(t.name, False) for t in self.outputs))

    def _clock(self, t0: float, t1: float, t2: float) -> None:
        self.times.input_s += t1 - t0
        self.times.infer_s += t2 - t1
        self.times.output_s += time.perf_counter() - t2


WARMUP_RUNS = 3


def warm_up(pipeline: Pipeline) -> None:
    """Run the pipeline's sample a few times, then clear its statistics (they count traffic).

    Raises:
        ModelLoadError: the model failed on the sample, naming the input shapes tried and
            the runtime's own error.
    """
    sample = pipeline.sample()
    try:
        for _ in range(WARMUP_RUNS):
            pipeline.execute([sample])
    except Exception as exc:
        raise ModelLoadError(f"warm-up failed{_tried(pipeline, sample)}: {str(exc).strip()}") from exc
    pipeline.times = StageTimes()


def _tried(pipeline: Pipeline, sample: Work) -> str:
    if not isinstance(pipeline, TensorPipeline):
        return ""
    shapes = {name: list(np.shape(a)) for name, a in sample.payload.items()}
    if pipeline.runner.plan.shapes:
        return f" at the plan's input shapes {shapes}"
    free = [s.name for s in pipeline.signature.inputs
            if any(isinstance(d, str) and j != s.batch_axis for j, d in enumerate(s.shape))]
    return (f" at input shapes {shapes} (the plan records no input shapes; re-run `inferno accelerate` "
            f"with --shape NAME:DIMS for {free or 'the inputs'} at sizes the model takes)")


def _rows(array: np.ndarray, axis: int | None, start: int, stop: int) -> np.ndarray:
    if axis is None:
        return array
    return array[(slice(None),) * axis + (slice(start, stop),)]


def _reference_ranges(folder: Path) -> dict[str, tuple[float, float]]:
    try:
        profile = ReferenceProfile.load(folder)
    except ModelLoadError as exc:  # warm-up still runs, on zeros; the monitor reports the profile
        log.warning("warm-up of %s uses zeros: %s", folder, exc)
        return {}
    return {} if profile is None else profile.ranges


class TextPipeline(Pipeline):
    """Strings in (input ``text``, BYTES [n]), normalized embeddings out."""

    OVERHEAD_TOKENS = 64
    """What one more runtime call costs, in padded token rows: splitting a batch by length
    pays only when it saves more padding than this."""

    def __init__(self, runner: PlanRunner, text: TextPreprocessor, group_by_length: bool = True) -> None:
        super().__init__(runner)
        self.text = text
        self.max_length = text.max_length
        self.group_by_length = group_by_length
        self.sequence_multiple = runner.runtime.sequence_multiple
        signature = runner.signature
        self.primary = signature.primary_output()
        spec = signature.outputs[self.primary]
        self.inputs = (TensorMeta(TEXT_INPUT, "BYTES", (-1,)),)
        self.outputs = (TensorMeta(spec.name, "FP32", (-1, -1)),)
        width = spec.shape[-1] if isinstance(spec.shape[-1], int) else self.execute([self.sample()])[0][spec.name].shape[-1]
        self.outputs = (TensorMeta(spec.name, "FP32", (-1, int(width))),)

    def prepare(self, request: InferRequest) -> Work:
        tensor = request.inputs.get(TEXT_INPUT)
        if tensor is None or len(request.inputs) != 1:
            raise UserInputError(f"inputs: expected ['{TEXT_INPUT}'] (BYTES [n]), got {sorted(request.inputs)}")
        if tensor.datatype != "BYTES" or len(tensor.shape) != 1:  # strictly the metadata, as Triton does
            raise UserInputError(
                f"input {TEXT_INPUT!r}: expected BYTES [n] (its metadata: {self.inputs[0].describe()}), "
                f"got {tensor.datatype} {list(tensor.shape)}"
            )
        if tensor.shape[0] == 0:
            raise UserInputError(f"input {TEXT_INPUT!r}: expected at least one string, got 0")
        try:
            texts = [b.decode("utf-8") for b in tensor.data.reshape(-1)]
        except UnicodeDecodeError as exc:
            raise UserInputError(f"input {TEXT_INPUT!r}: expected UTF-8 strings, got invalid bytes ({exc})") from None
        return Work(len(texts), texts, self.requested(request))

    def execute(self, works: list[Work]) -> list[Outputs]:
        t0 = time.perf_counter()
        texts = [text for work in works for text in work.payload]
        encodings = self.text.encodings(texts)
        step = self.sequence_multiple
        lengths = [min(-(-max(1, len(e.ids)) // step) * step, self.max_length) for e in encodings]
        groups = length_groups(lengths, self.OVERHEAD_TOKENS) if self.group_by_length else [list(range(len(texts)))]
        embeddings: np.ndarray | None = None
        infer_s = 0.0
        for members in groups:
            feeds = self.text.feeds([encodings[i] for i in members], max(lengths[i] for i in members))
            t1 = time.perf_counter()
            out = self.runner.runtime.run(feeds)[self.primary]
            infer_s += time.perf_counter() - t1
            if embeddings is None:
                embeddings = np.empty((len(texts), out.shape[-1]), dtype=np.float32)
            embeddings[members] = out
        if embeddings is None:
            raise RuntimeError("execute() got no works")  # the batcher never sends an empty batch
        t3 = time.perf_counter()
        embeddings /= np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
        name = self.outputs[0].name
        results: list[Outputs] = []
        start = 0
        for work in works:
            results.append({name: embeddings[start:start + work.rows]})
            start += work.rows
        self.times.input_s += t3 - t0 - infer_s
        self.times.infer_s += infer_s
        self.times.output_s += time.perf_counter() - t3
        return results

    def sample(self) -> Work:
        texts = ["warm-up", "a somewhat longer sentence to warm the model up with"]
        return Work(len(texts), texts, (RequestedOutput(self.outputs[0].name, False),))


def length_groups(lengths: Sequence[int], overhead: int) -> list[list[int]]:
    """Split rows into runtime calls by length, minimizing Σ(rows × longest) + overhead per call.

    Rows are sorted by length and cut only where the length changes; a dynamic program over
    those cut points picks the cheapest split (one call when splitting does not pay).
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    ends = [i + 1 for i in range(len(order))
            if i == len(order) - 1 or lengths[order[i]] != lengths[order[i + 1]]]
    best = [0.0] + [float("inf")] * len(ends)
    cut = [0] * (len(ends) + 1)
    starts = [0, *ends]
    for j in range(1, len(starts)):
        longest = lengths[order[starts[j] - 1]]
        for k in range(j):
            cost = best[k] + overhead + (starts[j] - starts[k]) * longest
            if cost < best[j]:
                best[j], cut[j] = cost, k
    groups = []
    j = len(starts) - 1
    while j > 0:
        groups.append(order[starts[cut[j]]:starts[j]])
        j = cut[j]
    return groups[::-1]

