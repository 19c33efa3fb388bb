"""``mixed_precision``: INT8 everywhere except the nodes whose quantization hurts most.

Which nodes are sensitive is *measured*, as Intel Neural Compressor and NNCF do, not guessed:

1. Candidates are the nodes the base quantizer would quantize (``op_types``), grouped per
   node or per layer (``granularity``).
2. Sensitivity: for each group, quantize only that group and score the graph against FP32 on
   the calibration feeds (mean per-sample output cosine, see ``_sensitivity``).
3. Search: with groups ranked most-harmful first, try keeping the top k in FP32 for
   k = 0, 1, 2, 4, 8, ... up to ``max_fp32_fraction`` of the groups, and stop at the first k
   whose graph reaches ``target_cosine``. If none does, the best-scoring graph is written and
   the report says the target was missed.

Cost: the sensitivity step quantizes each single-node group on its own (see ``_graft``) and
scores it on ``rank_samples`` batches; the search runs ORT on the whole model about
log2(groups) times and scores on ``max_samples`` batches. The same batches calibrate
(static base) and score, so the achieved cosine is an in-sample figure: measure accuracy on
held-out data afterwards.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import onnx
from pydantic import Field

from inferno.errors import PassError
from inferno.passes import _quant
from inferno.passes._graft import graft, single_node_model, value_types
from inferno.passes._io import (
    PROTOBUF_LIMIT,
    load_model,
    op_types,
    require_qdq_axis,
    save_model,
    translate_errors,
)
from inferno.passes._sensitivity import (
    Candidate,
    Evaluator,
    dynamic_candidates,
    ensure_node_names,
    group_key,
    static_candidates,
)
from inferno.passes.base import Feeds, Pass, PassContext, PassOptions, register

log = logging.getLogger(__name__)

METADATA_KEY = "inferno.mixed_precision"
"""``metadata_props`` key under which the written graph carries its report (JSON)."""

QuantizeFn = Callable[[Path, Path, Sequence[str]], None]
"""Write ``dst``: the graph at ``src`` with exactly the named nodes quantized."""


@dataclass(frozen=True)
class Sensitivity:
    """How much quantizing one group alone changes the outputs."""

    group: str
    nodes: tuple[str, ...]
    cosine: float
    """Output cosine to FP32 with only this group quantized (lower = more sensitive)."""


@dataclass(frozen=True)
class MixedPrecisionReport:
    """What ``mixed_precision`` measured and chose; also stored in the graph's metadata."""

    base: str
    granularity: str
    target_cosine: float
    cosine: float
    """Output cosine to FP32 of the written graph, on the calibration feeds."""
    reached: bool
    fp32_nodes: tuple[str, ...]
    quantized_nodes: tuple[str, ...]
    ranking: tuple[Sensitivity, ...]
    """Every group, most sensitive first."""
    trials: tuple[tuple[int, float], ...]
    """(groups kept in FP32, cosine) for each step of the search."""

    @property
    def fp32_groups(self) -> tuple[str, ...]:
        """The groups kept in FP32."""
        return tuple(s.group for s in self.ranking if set(s.nodes) <= set(self.fp32_nodes))

    def to_json(self) -> str:
        """The report as a JSON object."""
        return json.dumps(asdict(self))


@dataclass(frozen=True)
class _Base:
    """How to quantize with one of ORT's quantizers, for the search."""

    op_types: tuple[str, ...]
    candidates: Callable[[onnx.ModelProto, Sequence[str]], list[Candidate]]
    prepare: Callable[[Path, Path], Path]
    quantizer: Callable[[MixedPrecision.Options, Sequence[str], Sequence[Feeds], Path], QuantizeFn]


def _dynamic_quantizer(
    options: MixedPrecision.Options, types: Sequence[str], feeds: Sequence[Feeds], work: Path
) -> QuantizeFn:
    def quantize(src: Path, dst: Path, nodes: Sequence[str]) -> None:
        _quant.quantize_dynamic(
            src, dst, op_types=types, per_channel=options.per_channel, nodes_to_quantize=nodes
        )

    return quantize


def _static_quantizer(
    options: MixedPrecision.Options, types: Sequence[str], feeds: Sequence[Feeds], work: Path
) -> QuantizeFn:
    cache = work / "calibration.json"  # calibrate once; every trial reuses the ranges

    def quantize(src: Path, dst: Path, nodes: Sequence[str]) -> None:
        _quant.quantize_static(
            src,
            dst,
            feeds,
            method=options.calibration_method,
            per_channel=options.per_channel,
            activation=options.activation,
            op_types=types,
            percentile=options.percentile,
            nodes_to_quantize=nodes,
            cache=cache,
        )

    return quantize


BASES: dict[str, _Base] = {
    "dynamic": _Base(("MatMul",), dynamic_candidates, lambda src, work: src, _dynamic_quantizer),
    "static": _Base(
        ("MatMul", "Conv", "Gemm"), static_candidates, _quant.preprocess, _static_quantizer
    ),
}
"""Base quantizer by option value: default op types, candidate rule, preparation, quantizer."""


class _Trials:
    """Writes, scores and cleans up graphs that quantize a chosen set of candidate nodes."""

    def __init__(self, model: Path, work: Path, quantize: QuantizeFn, evaluator: Evaluator) -> None:
        self.model, self.work, self.quantize, self.evaluator = model, work, quantize, evaluator
        self.count = 0
        self._memo: dict[tuple[frozenset[str], int | None], tuple[float, Path]] = {}
        host = onnx.load(str(model))
        self._host = host if host.ByteSize() <= PROTOBUF_LIMIT else None  # grafting serializes it
        self._types = value_types(host) if self._host is not None else {}

    def run(self, nodes: Sequence[str], limit: int | None = None) -> tuple[float, Path]:
        """Cosine to FP32 of ORT's graph quantizing exactly ``nodes`` (none: the prepared graph).

        ``limit`` scores on the first batches only. Results are remembered until discarded.
        """
        if not nodes:
            return self.evaluator.cosine(self.model, limit), self.model
        key = (frozenset(nodes), limit)
        if key not in self._memo:
            self.count += 1
            path = self.work / f"trial_{self.count}.onnx"
            start = time.perf_counter()
            self.quantize(self.model, path, nodes)
            cosine = self.evaluator.cosine(path, limit)
            log.debug(
                "trial %d: %d node(s) quantized, cosine %.6f (%.2fs)",
                self.count,
                len(nodes),
                cosine,
                time.perf_counter() - start,
            )
            self._memo[key] = (cosine, path)
        return self._memo[key]

    def single(self, candidate: Candidate, limit: int | None) -> float:
        """Cosine to FP32 with only ``candidate`` quantized, grafted when possible (see ``_graft``)."""
        grafted = self._grafted(candidate)
        if grafted is not None:
            return self.evaluator.cosine(grafted.SerializeToString(), limit)
        cosine, path = self.run([candidate[0]], limit)
        self.discard(path)
        return cosine

    def _grafted(self, candidate: Candidate) -> onnx.ModelProto | None:
        if self._host is None:
            return None
        name, node = candidate
        src, dst = self.work / "single.onnx", self.work / "single_quantized.onnx"
        onnx.save(single_node_model(self._host, node, self._types), str(src))
        try:
            self.quantize(src, dst, [name])
        except Exception as exc:  # any ORT failure on the small graph: use the whole-model path
            log.debug("quantizing %s alone failed (%s); quantizing the whole model", node, exc)
            return None
        trial = graft(self._host, node, onnx.load(str(dst)))
        if trial is None:
            log.debug("%s cannot be grafted; quantizing the whole model", node)
        return trial

    def discard(self, path: Path) -> None:
        """Delete a trial graph that lost (never the prepared graph)."""
        if path == self.model:
            return
        path.unlink(missing_ok=True)
        self._memo = {k: v for k, v in self._memo.items() if v[1] != path}


def schedule(max_k: int) -> list[int]:
    """0, 1, 2, 4, 8, ... up to and including ``max_k``."""
    steps = {0, max_k} | {2**i for i in range(max(0, max_k).bit_length()) if 2**i <= max_k}
    return sorted(steps)


def search(
    ranking: Sequence[Sensitivity], trials: _Trials, target: float, max_k: int
) -> tuple[int, float, Path, list[tuple[int, float]]]:
    """Smallest k in ``schedule(max_k)`` whose graph (top-k groups FP32) reaches ``target``.

    Returns:
        (k, cosine, graph path, every (k, cosine) tried); the best k when none reaches it.
    """
    best: tuple[int, float, Path] | None = None
    tried: list[tuple[int, float]] = []
    for k in schedule(max_k):
        cosine, path = trials.run([n for s in ranking[k:] for n in s.nodes])
        tried.append((k, cosine))
        if best is None or cosine > best[1]:
            if best is not None:
                trials.discard(best[2])
            best = (k, cosine, path)
        else:
            trials.discard(path)
        if cosine >= target:
            break
    if best is None:  # schedule() always yields 0
        raise PassError("mixed_precision: empty search schedule")
    return (*best, tried)


@register
class MixedPrecision(Pass):
    """INT8 with the most accuracy-sensitive nodes kept in FP32, chosen by measurement.

    See the module docstring for the algorithm. The written graph carries the report as
    JSON in ``metadata_props[METADATA_KEY]``; after ``run`` it is also ``self.report``.
    """

    name = "mixed_precision"
    precision = "int8"

    class Options(PassOptions):
        base: Literal["dynamic", "static"] = "dynamic"
        """Quantizer for the INT8 part: ``quantize_dynamic`` or ``quantize_static`` (QDQ)."""
        op_types: tuple[str, ...] | None = None
        """Candidate op types; None: MatMul for dynamic, MatMul/Conv/Gemm for static."""
        per_channel: bool = True
        """Per-output-channel weight scales."""
        target_cosine: float = Field(default=0.995, gt=0, le=1)
        """Output cosine to FP32 (calibration feeds) the graph must reach."""
        max_fp32_fraction: float = Field(default=0.5, ge=0, le=1)
        """Most groups, as a fraction of all candidates, that may stay FP32."""
        granularity: Literal["node", "layer"] = "node"
        """Rank single nodes, or layers: name prefix through the first numbered component
        (``/encoder/layer.3/...`` → ``/encoder/layer.3``), else the parent path."""
        max_samples: int = Field(default=32, ge=1)
        """Most calibration batches used to calibrate and to score the search's graphs."""
        rank_samples: int = Field(default=4, ge=1)
        """Batches used to measure each group's sensitivity: only the order matters there, and
        this is the step that runs once per candidate."""
        calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
        """Calibration for the static base."""
        activation: Literal["uint8", "int8"] = "uint8"
        """Activation type for the static base."""
        percentile: float = Field(default=99.999, gt=0, le=100)
        """Percentile for ``calibration_method="percentile"``."""

    options: Options

    def __init__(self, options: PassOptions | None = None) -> None:
        super().__init__(options)
        self.report: MixedPrecisionReport | None = None
        """What the last ``run`` measured and chose."""

    def _op_types(self) -> tuple[str, ...]:
        return self.options.op_types or BASES[self.options.base].op_types

    def applies_to(self, model: onnx.ModelProto, ctx: PassContext) -> bool:
        """False without calibration batches or without a node of the candidate op types."""
        return bool(ctx.calibration) and bool(op_types(model) & set(self._op_types()))

    def run(self, src: Path, dst: Path, ctx: PassContext) -> None:
        """Measure, search and write the mixed graph to ``dst``; fills ``self.report``.

        Raises:
            PassError: no calibration data, no candidate nodes, unreadable ``src``, a
                per-channel static base on an opset below 13 (run ``prepare`` first), or a
                failure inside ORT.
        """
        if not ctx.calibration:
            raise PassError(
                f"{self.name}: needs calibration batches (PassContext.calibration is empty)"
            )
        model = load_model(src, self.name, weights=False)
        if self.options.base == "static" and self.options.per_channel:
            require_qdq_axis(model, self.name, src)
        feeds = _quant.model_feeds(ctx.calibration, model, self.name, self.options.max_samples)
        with (
            tempfile.TemporaryDirectory(prefix="inferno-mixed-") as tmp,
            translate_errors(self.name, src),
        ):
            report, path = self._choose(src, Path(tmp), feeds, ctx.threads)
            self._write(path, dst, report)
        self.report = report
        log.log(
            logging.INFO if report.reached else logging.WARNING,
            "%s: %d of %d group(s) kept FP32, cosine %.5f (target %.5f)",
            self.name,
            len(report.fp32_groups),
            len(report.ranking),
            report.cosine,
            report.target_cosine,
        )

    def _choose(
        self, src: Path, work: Path, feeds: Sequence[Feeds], threads: int
    ) -> tuple[MixedPrecisionReport, Path]:
        """Rank the groups, search k; return the report and the chosen graph (inside ``work``)."""
        base = BASES[self.options.base]
        prepared = self._prepare(src, work, base)
        groups = self._groups(prepared, base)
        quantize = base.quantizer(self.options, self._op_types(), feeds, work)
        trials = _Trials(prepared, work, quantize, Evaluator(src, feeds, threads))
        # Quantizing every candidate first calibrates (static base) and is the search's k = 0.
        trials.run([name for members in groups.values() for name, _ in members])
        ranking = self._rank(groups, trials)
        max_k = math.floor(self.options.max_fp32_fraction * len(ranking))
        k, cosine, path, tried = search(ranking, trials, self.options.target_cosine, max_k)
        return self._report(ranking, k, cosine, tried), path

    def _prepare(self, src: Path, work: Path, base: _Base) -> Path:
        """The graph the trials quantize: the base's preparation, with every node named."""
        prepared = base.prepare(src, work)
        model = onnx.load(str(prepared))
        if ensure_node_names(model):
            prepared = work / "named.onnx"
            save_model(model, prepared)
        return prepared

    def _groups(self, prepared: Path, base: _Base) -> dict[str, list[Candidate]]:
        found = base.candidates(
            onnx.load(str(prepared), load_external_data=False), self._op_types()
        )
        if not found:
            raise PassError(
                f"{self.name}: no node of {list(self._op_types())} to quantize in '{prepared}'"
            )
        groups: dict[str, list[Candidate]] = {}
        for candidate in found:
            groups.setdefault(group_key(candidate[0], self.options.granularity), []).append(
                candidate
            )
        return groups

    def _rank(self, groups: dict[str, list[Candidate]], trials: _Trials) -> list[Sensitivity]:
        """Every group's sensitivity, most harmful (lowest cosine) first."""
        start, ranking, limit = time.perf_counter(), [], self.options.rank_samples
        for group, members in groups.items():
            if len(members) == 1:
                cosine = trials.single(members[0], limit)
            else:
                cosine, path = trials.run([name for name, _ in members], limit)
                trials.discard(path)
            ranking.append(Sensitivity(group, tuple(name for name, _ in members), cosine))
        log.info(
            "%s: measured %d group(s) in %.1fs",
            self.name,
            len(ranking),
            time.perf_counter() - start,
        )
        return sorted(ranking, key=lambda s: s.cosine)

    def _report(
        self, ranking: list[Sensitivity], k: int, cosine: float, tried: list[tuple[int, float]]
    ) -> MixedPrecisionReport:
        return MixedPrecisionReport(
            base=self.options.base,
            granularity=self.options.granularity,
            target_cosine=self.options.target_cosine,
            cosine=cosine,
            reached=cosine >= self.options.target_cosine,
            fp32_nodes=tuple(n for s in ranking[:k] for n in s.nodes),
            quantized_nodes=tuple(n for s in ranking[k:] for n in s.nodes),
            ranking=tuple(ranking),
            trials=tuple(tried),
        )

    @staticmethod
    def _write(path: Path, dst: Path, report: MixedPrecisionReport) -> None:
        model = onnx.load(str(path))
        kept = [p for p in model.metadata_props if p.key != METADATA_KEY]
        del model.metadata_props[:]
        model.metadata_props.extend(kept)
        model.metadata_props.add(key=METADATA_KEY, value=report.to_json())
        save_model(model, dst)
