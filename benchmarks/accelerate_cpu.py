"""inferno's chosen plan against the plain CPU recipes a user would write, side by side.

What it measures, per bundled model, in one process and on the same inputs:

contenders
    PyTorch eager FP32 (``torch.inference_mode()``, ``torch.set_num_threads``: the baseline),
    ONNX Runtime FP32 (an ``InferenceSession`` with default options except the thread count),
    ONNX Runtime INT8 dynamic (``quantize_dynamic(fp32, out)`` with no options),
    OpenVINO FP32 and BF16 (``compile_model(onnx, "CPU", {precision hint, threads, LATENCY})``,
    skipped with a note when openvino is not installed), OpenVINO INT8 by NNCF — the recipe of
    OpenVINO's own tutorials: ``nncf.quantize(core.read_model(onnx), dataset)`` with
    ``model_type=TRANSFORMER`` for minilm (default PTQ otherwise), calibrated one sample per
    item on the model's calibration data (minilm: its 260 bundled sentences; digits: the
    training split), then compiled with the FP32 hint ("rest FP32") and the BF16 hint ("rest
    BF16") — and inferno's plan: the folder given by
    ``--plan``, else the one ``inferno.accelerate(model, repository=<temp dir>)`` writes with
    default settings (run first; minutes for minilm). Every contender gets the same pre-tokenized
    feeds: tokenization is outside every timing, inferno's included.

minilm workloads
    ``short``: batch 32 of real short sentences (the first 32 evaluation sentences of at most
    16 tokens), padded to the longest in the batch; ``128``: batch 32 × 128 tokens of real text
    (the evaluation sentences concatenated and cut into windows of exactly 128 tokens including
    [CLS]/[SEP], attention mask all ones); ``p50``: batch-1 latency over the same short
    sentences, one at a time. Fidelity: cosine similarity (mean and min) of each contender's
    embeddings to PyTorch eager FP32 on sentences that neither inferno nor NNCF saw while
    tuning: the 200 held-out in-domain sentences of ``tests/data/drift/in_domain.txt``
    (batches of 32, padded per batch); the 260 tuning sentences' min is shown beside them.
    Within fidelity = held-out cosine mean >= 0.99 and min >= 0.95 (inferno's default budget).

digits workloads
    Throughput at batch 32 (the test images, cycled) and batch-1 p50 latency. Fidelity: test
    accuracy on the whole test split; within fidelity = at most 0.5 point below PyTorch FP32.

Timing
    Every contender is warmed up and its repetition count K per workload is sized from the
    warm-up (about 0.8 s per throughput cell, 0.3 s per latency cell). Then the contenders
    are interleaved round-robin for ``--rounds`` rounds (default: 5, or more while the timing
    has taken under a minute, up to 25), workload by workload so that the cells compared are
    timed back to back, the order of contenders rotating each round; each round times each
    contender on each workload over K repetitions. Reported values are medians
    over rounds; every ratio is the median of the per-round ratios, so slow drifts of a shared
    machine cancel out. Absolute numbers mean little on a shared machine; the ratios are the
    result.

% of peak
    ``%pk`` is the contender's throughput in operations per second (MatMul/Conv/Gemm FLOPs of
    the FP32 graph at the workload's padded shapes, counted from the graph by ORT's symbolic
    shape inference: padding tokens count, as they are computed) over this machine's measured
    GEMM peak (``benchmarks/peak.py``, measured before and after the timing, the higher kept)
    in the precision the contender's matrix products run in: INT8 for INT8 graphs, BF16 for
    BF16 compute, else FP32. Small models at batch 32 can pass 100%: the peak is one square
    GEMM's, and a drifting shared machine can be faster during the timing than at either
    peak measurement.

Ratios
    ``×eager`` is each contender's speed-up over PyTorch eager (throughput ratio; for p50, eager
    latency ÷ contender latency). The headline is inferno's plan ÷ the fastest peer that stays
    within the same fidelity, per workload; inferno ÷ ONNX Runtime FP32 is printed too.

Reproduce (from the repository root, with the dev environment)::

    python benchmarks/accelerate_cpu.py --model digits
    python benchmarks/accelerate_cpu.py --model minilm
    python benchmarks/accelerate_cpu.py --model minilm --plan model_repository/minilm/1

Results go to ``benchmarks/results/accelerate_cpu.json`` (``--json`` to change): one entry per
model, each with the command line, the CPU and the date; running one model keeps the other's
entry.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

Feeds = dict[str, np.ndarray]
RunFn = Callable[[Feeds], np.ndarray]

MODELS = ("digits", "minilm")
BATCH = 32
SHORT_MAX_TOKENS = 16
WINDOW_TOKENS = 128
DIGITS_MAX_DROP = 0.005
"""digits: a peer is within fidelity when at most 0.5 point below PyTorch FP32 accuracy."""
THROUGHPUT_TARGET_S = 0.8
LATENCY_TARGET_S = 0.3
MAX_REPS = 5000
MIN_ROUNDS = 5
MAX_ROUNDS = 25
AUTO_TIMING_S = 60.0
MAX_PASSES = 500
PAUSE_S = 0.05
"""Between contenders: lets the previous runtime's spinning worker threads go idle."""
WARM_CALLS = 4
"""Untimed calls per probe feed before K is sized: first calls allocate, compile kernels and
fill caches, and a static-shape runtime compiles a shape's program on its third call
(``inferno.runtimes.openvino.STATIC_AFTER``). Sized on a call that compiled, K was 2 for the
plan where 80 were due: cells of 20 ms that timed the switch from the previous contender."""
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "accelerate_cpu.json"
HELD_OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "drift" / "in_domain.txt"
"""minilm sentences that accelerate and NNCF never see: fidelity is judged on them."""
EAGER = "eager"
PLAN = "inferno"
ORT_FP32 = "ort-fp32"


@dataclass(frozen=True)
class Workload:
    key: str
    column: str
    description: str
    feeds: tuple[Feeds, ...]
    latency: bool = False
    """Batch-1 p50 in ms (lower is better); otherwise samples per second."""


@dataclass
class Contender:
    key: str
    label: str
    recipe: str
    run: RunFn
    close: Callable[[], None] = lambda: None
    compute: str = "fp32"
    """Precision its matrix products run in (fp32, bf16, int8): which peak %pk divides by."""
    kernel_probe: Callable[[], str | None] = lambda: None
    """OpenVINO's executed primitives (read after the timing, when every node has run)."""
    kernels: str | None = None
    fidelity: dict[str, float] = field(default_factory=dict)
    within: bool = False
    reps: dict[str, int] = field(default_factory=dict)
    rounds: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class Suite:
    """One model's inputs: timed workloads and the evaluation batches fidelity is judged on."""

    name: str
    workloads: list[Workload]
    eval_batches: list[Feeds]
    """Where fidelity is judged: data no contender was tuned on."""
    labels: np.ndarray | None
    fidelity_note: str
    output_index: int
    info: dict[str, Any] = field(default_factory=dict)
    tuned_batches: list[Feeds] = field(default_factory=list)
    """The data the contenders calibrated on (minilm): its cosine min is shown beside."""
    calibration: list[Feeds] = field(default_factory=list)
    """One sample per feed, for the NNCF peers' calibration."""


def say(text: str) -> None:
    print(text, flush=True)


# --------------------------------------------------------------------------- workloads


def minilm_suite(model: Any) -> Suite:
    pre = model.preprocessor
    sentences = list(model.eval_data.samples)
    tok = _plain_tokenizer(pre.tokenizer)
    short, mean_tokens = _short_sentences(tok, sentences)
    short_batch = pre.encode(short)
    windows, wrapped = _windows(tok, sentences, pre.input_names)
    singles = tuple(pre.encode([s]) for s in short)
    workloads = [
        Workload(
            "short",
            "short/s",
            (
                f"batch {BATCH} of real short sentences (first {BATCH} eval sentences of <= "
                f"{SHORT_MAX_TOKENS} tokens; mean {mean_tokens:.1f} tokens incl. [CLS]/[SEP]), padded "
                f"to the longest ({short_batch['input_ids'].shape[1]})"
            ),
            (short_batch,),
        ),
        Workload(
            "long",
            "128/s",
            (
                f"batch {BATCH} x {WINDOW_TOKENS} tokens of real text (eval sentences concatenated, cut "
                f"into windows incl. [CLS]/[SEP], attention mask all ones"
                f"{'; the text wraps around' if wrapped else ''})"
            ),
            (windows,),
        ),
        Workload(
            "p50",
            "p50 ms",
            (
                f"batch 1, the same {BATCH} short sentences one at a time, each at its own length; "
                "p50 of per-call latency"
            ),
            singles,
            latency=True,
        ),
    ]
    held_out = [line.strip() for line in HELD_OUT.read_text().splitlines() if line.strip()]
    tuning = list(model.calibration_data.samples)
    if set(held_out) & set(tuning):
        raise SystemExit(f"{HELD_OUT} shares sentences with the tuning set: not held out")

    def batches(texts: list[str]) -> list[Feeds]:
        return [pre.encode(texts[i : i + BATCH]) for i in range(0, len(texts), BATCH)]

    return Suite(
        "minilm",
        workloads,
        batches(held_out),
        None,
        f"cosine to PyTorch eager FP32 embeddings over {len(held_out)} held-out sentences "
        f"({HELD_OUT.name}; batches of {BATCH}, padded per batch); 'tuned min': the "
        f"{len(tuning)} sentences accelerate and NNCF calibrated on",
        model.signature.primary_output(),
        {
            "short_mean_tokens": mean_tokens,
            "short_padded_length": int(short_batch["input_ids"].shape[1]),
            "held_out_sentences": len(held_out),
            "tuning_sentences": len(tuning),
        },
        tuned_batches=batches(tuning),
        calibration=[pre.encode([t]) for t in tuning],
    )


def _short_sentences(tok: Any, sentences: list[str]) -> tuple[list[str], float]:
    """The first BATCH sentences of at most SHORT_MAX_TOKENS tokens, and their mean token count."""
    counts = [len(e.ids) for e in tok.encode_batch(sentences)]
    picked = [(s, n) for s, n in zip(sentences, counts, strict=True) if n <= SHORT_MAX_TOKENS]
    if len(picked) < BATCH:
        raise SystemExit(
            f"minilm: only {len(picked)} sentences of <= {SHORT_MAX_TOKENS} tokens, need {BATCH}"
        )
    picked = picked[:BATCH]
    return [s for s, _ in picked], float(np.mean([n for _, n in picked]))


def _plain_tokenizer(tokenizer: Any) -> Any:
    """A copy of the model's tokenizer that neither pads nor truncates (for counting and windows)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer.to_str())
    tok.no_padding()
    tok.no_truncation()
    return tok


def _windows(tok: Any, sentences: list[str], names: tuple[str, ...]) -> tuple[Feeds, bool]:
    body = WINDOW_TOKENS - 2
    ids = [i for e in tok.encode_batch(sentences, add_special_tokens=False) for i in e.ids]
    wrapped = len(ids) < BATCH * body
    while len(ids) < BATCH * body:
        ids = ids + ids
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    rows = [[cls_id, *ids[k * body : (k + 1) * body], sep_id] for k in range(BATCH)]
    input_ids = np.asarray(rows, dtype=np.int64)
    columns = {
        "input_ids": input_ids,
        "attention_mask": np.ones_like(input_ids),
        "token_type_ids": np.zeros_like(input_ids),
    }
    return {n: columns[n] for n in names}, wrapped


def digits_suite(model: Any) -> Suite:
    name = model.signature.input_names[0]
    pixels = np.ascontiguousarray(model.eval_data.samples[name], dtype=np.float32)
    labels = np.asarray(model.eval_data.labels)
    full = [{name: pixels[i : i + BATCH]} for i in range(0, len(pixels) - BATCH + 1, BATCH)]
    singles = tuple({name: pixels[i : i + 1]} for i in range(BATCH))
    workloads = [
        Workload(
            "b32",
            "b32/s",
            (
                f"batch {BATCH} of test images, cycling over the {len(full)} full batches of the "
                f"{len(pixels)}-image test split"
            ),
            tuple(full),
        ),
        Workload(
            "p50",
            "p50 ms",
            f"batch 1, the first {BATCH} test images one at a time; p50",
            singles,
            latency=True,
        ),
    ]
    eval_batches = [{name: pixels[i : i + BATCH]} for i in range(0, len(pixels), BATCH)]
    train = np.ascontiguousarray(model.calibration_data.samples[name], dtype=np.float32)
    return Suite(
        "digits",
        workloads,
        eval_batches,
        labels,
        f"test accuracy over the whole test split ({len(pixels)} images; calibration used the "
        "training split)",
        model.signature.primary_output(),
        {"test_images": len(pixels)},
        calibration=[{name: train[i : i + 1]} for i in range(min(len(train), 300))],
    )


# --------------------------------------------------------------------------- contenders


def torch_eager(model: Any, threads: int, index: int) -> Contender:
    import torch

    torch.set_num_threads(threads)
    module = model.torch_factory().eval()
    names = model.signature.input_names

    def run(feeds: Feeds) -> np.ndarray:
        with torch.inference_mode():
            out = module(*(torch.from_numpy(feeds[n]) for n in names))
        outs = out if isinstance(out, tuple | list) else (out,)
        return outs[index].numpy()

    return Contender(EAGER, "PyTorch eager FP32", "torch.inference_mode(), set_num_threads", run)


def _ort_run(path: Path, threads: int, index: int) -> RunFn:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return lambda feeds: session.run(None, {n: feeds[n] for n in names})[index]


def ort_fp32(model: Any, threads: int, index: int) -> Contender:
    return Contender(
        ORT_FP32,
        "ONNX Runtime FP32",
        "InferenceSession, default options + threads",
        _ort_run(model.onnx_path, threads, index),
    )


def ort_int8(model: Any, threads: int, index: int, tmp: Path) -> Contender:
    from onnxruntime.quantization import quantize_dynamic

    out = tmp / f"{model.name}-int8-dynamic.onnx"
    quantize_dynamic(model.onnx_path, out)
    return Contender(
        "ort-int8",
        "ONNX Runtime INT8 dynamic",
        "quantize_dynamic(fp32, out), no options",
        _ort_run(out, threads, index),
        compute="int8",
    )


def _ov_run(model: Any, hint: str, threads: int, index: int) -> tuple[RunFn, Callable[[], str]]:
    """``model``: a path or an ``ov.Model``, compiled for the CPU with the precision hint; with
    the probe of the primitives its compute nodes ran with."""
    import openvino as ov

    from inferno.runtimes.openvino import executed_nodes, kernel_summary

    compiled = ov.Core().compile_model(
        model if isinstance(model, ov.Model) else str(model),
        "CPU",
        {
            "INFERENCE_PRECISION_HINT": hint,
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
        },
    )
    request = compiled.create_infer_request()
    names = [p.get_any_name() for p in compiled.inputs]
    output = compiled.outputs[index]

    def run(feeds: Feeds) -> np.ndarray:
        return request.infer({n: feeds[n] for n in names})[output]

    return run, lambda: kernel_summary(executed_nodes(compiled))


def openvino(model: Any, threads: int, index: int, precision: str) -> Contender:
    hint = {"fp32": "f32", "bf16": "bf16"}[precision]
    run, probe = _ov_run(model.onnx_path, hint, threads, index)
    return Contender(
        f"ov-{precision}",
        f"OpenVINO {precision.upper()}",
        f"compile_model(onnx, CPU, precision hint {hint}, threads, LATENCY)",
        run,
        compute=precision,
        kernel_probe=probe,
    )


_NNCF_MODELS: dict[str, Any] = {}
"""NNCF's quantized ov.Model per bundled model: quantized once, compiled per precision hint."""


def nncf_int8(model: Any, suite: Suite, threads: int, index: int, rest: str) -> Contender:
    import nncf
    import openvino as ov

    transformer = suite.name == "minilm"
    if suite.name not in _NNCF_MODELS:
        ov_model = ov.Core().read_model(str(model.onnx_path))
        names = [p.get_any_name() for p in ov_model.inputs]
        dataset = nncf.Dataset(suite.calibration, lambda f: {n: f[n] for n in names})
        _NNCF_MODELS[suite.name] = nncf.quantize(
            ov_model,
            dataset,
            model_type=nncf.ModelType.TRANSFORMER if transformer else None,
            subset_size=len(suite.calibration),
        )
    hint = {"fp32": "f32", "bf16": "bf16"}[rest]
    scheme = "model_type=TRANSFORMER" if transformer else "default"
    run, probe = _ov_run(_NNCF_MODELS[suite.name], hint, threads, index)
    return Contender(
        f"nncf-int8-{rest}",
        f"OpenVINO INT8 (NNCF), rest {rest.upper()}",
        f"nncf.quantize(read_model(onnx), {len(suite.calibration)} samples, {scheme}); "
        f"compile_model(CPU, precision hint {hint}, threads, LATENCY)",
        run,
        compute="int8",
        kernel_probe=probe,
    )


def inferno_plan(folder: Path, threads: int) -> Contender:
    import inferno

    runner = inferno.load_plan(folder, threads=threads)
    index = runner.signature.primary_output()
    plan = runner.plan
    # INT8 graphs and INT8 weights with dynamically quantized activations multiply in INT8
    integer = plan.graph_precision in ("int8", "int8w", "mixed")
    compute = "int8" if integer else plan.compute_precision
    return Contender(
        PLAN,
        f"inferno plan ({plan.variant} @ {plan.runtime})",
        f"load_plan({folder}); runtime.run(feeds): {plan.variant} on {plan.runtime} ({plan.provider})",
        lambda feeds: runner.runtime.run(feeds)[index],
        runner.close,
        compute=compute if compute in ("fp32", "bf16", "int8") else "fp32",
        kernel_probe=lambda: getattr(runner.runtime, "kernels", None),
    )


def build_contenders(
    model: Any, suite: Suite, plan: Path, threads: int, tmp: Path
) -> tuple[list[Contender], dict[str, str]]:
    """Every contender that loads here, PyTorch eager first; the others' reasons in ``skipped``."""
    index = suite.output_index
    has_ov = importlib.util.find_spec("openvino") is not None
    has_nncf = has_ov and importlib.util.find_spec("nncf") is not None
    builders: list[tuple[str, Callable[[], Contender] | None]] = [
        ("PyTorch eager FP32", lambda: torch_eager(model, threads, index)),
        ("ONNX Runtime FP32", lambda: ort_fp32(model, threads, index)),
        ("ONNX Runtime INT8 dynamic", lambda: ort_int8(model, threads, index, tmp)),
        ("OpenVINO FP32", (lambda: openvino(model, threads, index, "fp32")) if has_ov else None),
        ("OpenVINO BF16", (lambda: openvino(model, threads, index, "bf16")) if has_ov else None),
        ("OpenVINO INT8 (NNCF), rest FP32",
         (lambda: nncf_int8(model, suite, threads, index, "fp32")) if has_nncf else None),
        ("OpenVINO INT8 (NNCF), rest BF16",
         (lambda: nncf_int8(model, suite, threads, index, "bf16")) if has_nncf else None),
        ("inferno plan", lambda: inferno_plan(plan, threads)),
    ]
    contenders, skipped = [], {}
    for label, build in builders:
        if build is None:
            skipped[label] = "openvino/nncf not installed (pip install 'inferno[openvino]')"
            continue
        say(f"  loading {label}")
        try:
            contenders.append(build())
        except Exception as exc:  # a benchmark row that cannot load is reported, not fatal
            skipped[label] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            say(f"  skipped {label}: {skipped[label]}")
    if not contenders or contenders[0].key != EAGER:
        raise SystemExit(f"PyTorch eager FP32, the baseline, did not load: {skipped}")
    return contenders, skipped


# --------------------------------------------------------------------------- fidelity


def measure_fidelity(suite: Suite, contenders: list[Contender]) -> list[Contender]:
    """Fill each contender's fidelity; drop (and report) the ones whose run fails."""
    reference = _outputs(contenders[0], suite.eval_batches)
    tuned_reference = _outputs(contenders[0], suite.tuned_batches) if suite.tuned_batches else None
    ref_accuracy = _accuracy(reference, suite.labels) if suite.labels is not None else None
    from inferno.config import Budget

    budget = Budget()
    kept = []
    for c in contenders:
        try:
            out = reference if c.key == EAGER else _outputs(c, suite.eval_batches)
        except Exception as exc:  # one broken contender must not hide the others
            say(f"  dropped {c.label}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            continue
        if ref_accuracy is not None:
            acc = _accuracy(out, suite.labels)
            c.fidelity = {"accuracy": acc, "reference_accuracy": ref_accuracy}
            c.within = ref_accuracy - acc <= DIGITS_MAX_DROP + 1e-9
        else:
            cos = _cosine(out, reference)
            c.fidelity = {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min())}
            c.within = (
                c.fidelity["cosine_mean"] >= budget.min_cosine_mean - 1e-9
                and c.fidelity["cosine_min"] >= budget.min_cosine_min - 1e-9
            )
            if tuned_reference is not None:
                tuned = _outputs(c, suite.tuned_batches) if c.key != EAGER else tuned_reference
                c.fidelity["tuned_cosine_min"] = float(_cosine(tuned, tuned_reference).min())
        kept.append(c)
    return kept


def _outputs(c: Contender, batches: list[Feeds]) -> np.ndarray:
    # copies: a runtime may hand back a view of a buffer that its next call overwrites
    return np.concatenate([np.array(c.run(b), dtype=np.float64) for b in batches])


def _accuracy(out: np.ndarray, labels: np.ndarray | None) -> float:
    return float(np.mean(out.argmax(axis=1) == np.asarray(labels).reshape(-1)))


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return np.sum(a * b, axis=1) / np.maximum(
        np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12
    )


# --------------------------------------------------------------------------- timing


def _samples(feeds: Feeds) -> int:
    return len(next(iter(feeds.values())))


def graph_flops(path: Path, feeds: Feeds) -> float:
    """Operations (2 per multiply-add) of the graph's MatMul/Gemm/Conv nodes at ``feeds``' shapes.

    Shapes come from ORT's symbolic shape inference with every input dimension fixed, so
    the reshapes of a transformer resolve; a node whose shape stays unknown counts 0.
    """
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    model = onnx.load(str(path))
    for graph_input in model.graph.input:
        if graph_input.name in feeds:
            dims = graph_input.type.tensor_type.shape.dim
            for dim, size in zip(dims, feeds[graph_input.name].shape, strict=True):
                dim.Clear()
                dim.dim_value = int(size)
    model = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    graph = model.graph
    shapes: dict[str, list[int]] = {i.name: list(i.dims) for i in graph.initializer}
    for value in (*graph.value_info, *graph.input, *graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = [d.dim_value for d in dims]
    total = 0
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm", "Conv"):
            continue
        out, first = shapes.get(node.output[0]), shapes.get(node.input[0])
        if out is None or first is None:
            continue
        if node.op_type in ("MatMul", "Gemm"):
            trans_a = any(a.name == "transA" and a.i for a in node.attribute)
            total += 2 * math.prod(out) * (first[-2] if trans_a else first[-1])
        elif node.op_type == "Conv" and node.input[1] in shapes:
            total += 2 * math.prod(out) * math.prod(shapes[node.input[1]][1:])
    return float(total)


def timed(c: Contender, w: Workload, reps: int) -> float:
    """One cell of one round: samples/s over ``reps`` batches, or the p50 ms of ``reps`` passes."""
    if w.latency:
        times = []
        for _ in range(reps):
            for feeds in w.feeds:
                start = time.perf_counter()
                c.run(feeds)
                times.append((time.perf_counter() - start) * 1e3)
        return float(np.percentile(times, 50))
    samples = 0
    start = time.perf_counter()
    for i in range(reps):
        feeds = w.feeds[i % len(w.feeds)]
        c.run(feeds)
        samples += _samples(feeds)
    return samples / (time.perf_counter() - start)


def warm_up(c: Contender, w: Workload) -> int:
    """Run untimed, then size K so that one cell takes about the target time."""
    probe = w.feeds[: min(len(w.feeds), 3)] if not w.latency else w.feeds
    for _ in range(WARM_CALLS):
        for feeds in probe:
            c.run(feeds)
    # the median call: one descheduled worker thread must not set K
    per_call = statistics.median(_call_time(c, feeds) for feeds in probe for _ in range(3))
    if w.latency:
        return max(1, min(MAX_PASSES, math.ceil(LATENCY_TARGET_S / (per_call * len(w.feeds)))))
    return max(1, min(MAX_REPS, math.ceil(THROUGHPUT_TARGET_S / per_call)))


def _call_time(c: Contender, feeds: Feeds) -> float:
    start = time.perf_counter()
    c.run(feeds)
    return time.perf_counter() - start


def run_rounds(suite: Suite, contenders: list[Contender], rounds: int | None) -> int:
    """Time ``rounds`` rounds, or with None at least MIN_ROUNDS and more while within budget."""
    for c in contenders:
        c.reps = {w.key: warm_up(c, w) for w in suite.workloads}
        c.rounds = {w.key: [] for w in suite.workloads}
        say(f"  warmed up {c.label}: K = {c.reps}")
    begin, r = time.perf_counter(), 0

    def another() -> bool:
        if rounds:
            return r < rounds
        in_budget = time.perf_counter() - begin < AUTO_TIMING_S
        return r < MIN_ROUNDS or (in_budget and r < MAX_ROUNDS)

    while another():
        started = time.perf_counter()
        shift = r % len(contenders)
        # workload-major: the cells compared with each other are timed back to back
        for w in suite.workloads:
            for c in contenders[shift:] + contenders[:shift]:
                c.rounds[w.key].append(timed(c, w, c.reps[w.key]))
                time.sleep(PAUSE_S)
        r += 1
        say(f"  round {r}{f'/{rounds}' if rounds else ''} ({time.perf_counter() - started:.1f} s)")
    return r


def speedup(c: Contender, base: Contender, w: Workload) -> float:
    """Median over rounds of c's speed-up over ``base`` in the same round."""
    pairs = zip(c.rounds[w.key], base.rounds[w.key], strict=True)
    return statistics.median(b / v if w.latency else v / b for v, b in pairs)


def median(c: Contender, w: Workload) -> float:
    return statistics.median(c.rounds[w.key])


# --------------------------------------------------------------------------- results


def headline(suite: Suite, contenders: list[Contender]) -> list[dict[str, Any]]:
    """inferno ÷ the fastest peer within fidelity (per workload), and inferno ÷ ONNX Runtime FP32."""
    plan = next((c for c in contenders if c.key == PLAN), None)
    if plan is None:
        return []
    peers = [c for c in contenders if c.key != PLAN]
    lines = []
    for w in suite.workloads:
        within = [c for c in peers if c.within]
        pick = max if not w.latency else min
        best = pick(within, key=lambda c: median(c, w)) if within else None
        ort = next((c for c in peers if c.key == ORT_FP32), None)
        for kind, peer in (("best peer within fidelity", best), ("ONNX Runtime FP32", ort)):
            if peer is not None:
                lines.append(
                    {
                        "workload": w.key,
                        "versus": kind,
                        "peer": peer.label,
                        "ratio": speedup(plan, peer, w),
                        "plan": median(plan, w),
                        "peer_value": median(peer, w),
                        "plan_within_fidelity": plan.within,
                    }
                )
    return lines


def peak_share(c: Contender, w: Workload, suite: Suite, peaks: dict[str, Any]) -> float | None:
    """Percent of this machine's measured GEMM peak in the contender's compute precision."""
    flops = suite.info.get("flop_per_sample", {}).get(w.key)
    peak = peaks.get(c.compute)
    if w.latency or not flops or peak is None:
        return None
    return median(c, w) * flops / (peak.gops * 1e9) * 100


def table(suite: Suite, contenders: list[Contender], peaks: dict[str, Any]) -> str:
    eager = contenders[0]
    fid_cols = (
        ["accuracy"] if suite.labels is not None
        else ["cos mean", "cos min"] + (["tuned min"] if suite.tuned_batches else [])
    )
    with_peak = {w.key for w in suite.workloads if peak_share(eager, w, suite, peaks) is not None}
    head = ["contender"]
    for w in suite.workloads:
        head += [w.column, "×eager"] + (["%pk"] if w.key in with_peak else [])
    head += [*fid_cols, "within"]
    rows = []
    for c in contenders:
        row = [c.label]
        for w in suite.workloads:
            value = median(c, w)
            row += [_fmt(value, w, unit=False), f"{speedup(c, eager, w):.2f}x"]
            if w.key in with_peak:
                share = peak_share(c, w, suite, peaks)
                row.append("-" if share is None else f"{share:.0f}%")
        if suite.labels is not None:
            row.append(f"{c.fidelity['accuracy'] * 100:.2f}%")
        else:
            row += [f"{c.fidelity['cosine_mean']:.5f}", f"{c.fidelity['cosine_min']:.5f}"]
            if suite.tuned_batches:
                row.append(f"{c.fidelity['tuned_cosine_min']:.5f}")
        rows.append([*row, "yes" if c.within else "no"])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def fmt(row: list[str]) -> str:
        return "  ".join(
            x.ljust(widths[0]) if i == 0 else x.rjust(widths[i]) for i, x in enumerate(row)
        )

    return "\n".join([fmt(head), "  ".join("-" * n for n in widths), *map(fmt, rows)])


def _fmt(value: float, w: Workload, *, unit: bool = True) -> str:
    text = f"{value:.3g}" if w.latency else f"{value:.1f}"
    return f"{text} {'ms' if w.latency else '/s'}" if unit else text


def headline_text(lines: list[dict[str, Any]], suite: Suite) -> str:
    columns = {w.key: w for w in suite.workloads}
    out = []
    for h in lines:
        w = columns[h["workload"]]
        what = "p50 latency, peer ms ÷ inferno ms" if w.latency else f"throughput {w.column}"
        note = "" if h["plan_within_fidelity"] else "  [inferno's plan is OUTSIDE the fidelity bar]"
        peer = h["peer"] if h["peer"] == h["versus"] else f"{h['versus']}: {h['peer']}"
        out.append(
            f"  inferno ÷ {peer}, {what}: {h['ratio']:.2f}x "
            f"({_fmt(h['plan'], w)} vs {_fmt(h['peer_value'], w)}){note}"
        )
    return "\n".join(out) or "  (no headline: inferno's plan did not load)"


def contender_json(
    c: Contender, suite: Suite, eager: Contender, peaks: dict[str, Any]
) -> dict[str, Any]:
    return {
        "key": c.key,
        "label": c.label,
        "recipe": c.recipe,
        "compute": c.compute,
        "kernels": c.kernels,
        "fidelity": c.fidelity,
        "within_fidelity": c.within,
        "workloads": {
            w.key: {
                "median": median(c, w),
                "unit": "ms" if w.latency else "samples/s",
                "vs_eager": speedup(c, eager, w),
                "percent_of_peak": peak_share(c, w, suite, peaks),
                "reps_per_round": c.reps[w.key],
                "rounds": c.rounds[w.key],
            }
            for w in suite.workloads
        },
    }


# --------------------------------------------------------------------------- driver


@contextmanager
def plan_folder(model: Any, args: argparse.Namespace, record: dict[str, Any]) -> Iterator[Path]:
    """The plan to benchmark: ``given``, or a fresh ``inferno.accelerate`` run.

    The run writes to ``repository`` when given (kept, for later ``--plan`` runs), else to a
    temporary one that is removed at the end.
    """
    from inferno.config import default_threads

    name, given, repository = model.name, args.plan, args.repository
    if given is not None:
        record["plan"] = {"source": str(given)}
        yield given
        return
    import inferno

    # default settings, except a --threads other than the default: plan for the threads compared
    settings = {} if args.threads == default_threads() else {"threads": args.threads}
    how = "default settings" + (f" but threads={args.threads}" if settings else "")
    say(f"{name}: running inferno.accelerate({name!r}), {how}")
    start = time.perf_counter()

    def progress(what: str, done: int, total: int) -> None:
        say(f"  [{done + 1}/{total}] {what} ({time.perf_counter() - start:.0f} s)")

    with tempfile.TemporaryDirectory(prefix="inferno-bench-") as tmp:
        report = inferno.accelerate(
            model, repository=repository or tmp, progress=progress, **settings
        )
        seconds = time.perf_counter() - start
        chosen = report.chosen
        say(
            f"  accelerate took {seconds:.0f} s; chose {chosen.name} on {chosen.runtime} "
            f"({chosen.provider}): {chosen.reason}"
        )
        record["plan"] = {
            "source": f"inferno.accelerate, {how}",
            "accelerate_s": seconds,
            "chosen": report.to_dict()["chosen"],
            "measured": [
                {
                    "variant": m.key,
                    "throughput_per_s": m.throughput_per_s,
                    "latency_ms_p50": m.latency_ms_p50,
                    "metrics": m.metrics,
                    "within_budget": m.within_budget,
                    "error": m.error,
                }
                for m in report.variants
            ],
        }
        if repository is not None:
            say(f"  plan kept at {chosen.path} (rerun with --plan {chosen.path})")
        yield Path(chosen.path)


def _load_average() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


@dataclass
class Run:
    """One model's measured results, ready to print and save."""

    name: str
    suite: Suite
    contenders: list[Contender]
    skipped: dict[str, str]
    rounds: int
    load: dict[str, float | None]
    elapsed: float
    record: dict[str, Any]
    peaks: dict[str, Any] = field(default_factory=dict)

    @property
    def headline(self) -> list[dict[str, Any]]:
        return headline(self.suite, self.contenders)


def bench_model(name: str, args: argparse.Namespace) -> Run:
    from inferno.models.zoo import load_bundled

    start = time.perf_counter()
    model = load_bundled(name)
    say(f"{name}: model loaded in {time.perf_counter() - start:.1f} s")
    suite = minilm_suite(model) if name == "minilm" else digits_suite(model)
    suite.info["flop_per_sample"] = {
        w.key: graph_flops(model.onnx_path, w.feeds[0]) / _samples(w.feeds[0])
        for w in suite.workloads if not w.latency
    }
    record: dict[str, Any] = {}
    with plan_folder(model, args, record) as folder, tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        say(f"{name}: loading contenders ({args.threads} threads)")
        contenders, skipped = build_contenders(model, suite, folder, args.threads, Path(tmp))
        say(f"{name}: fidelity ({suite.fidelity_note})")
        contenders = measure_fidelity(suite, contenders)
        say(f"{name}: timing, {args.rounds or 'auto'} interleaved rounds")
        load_before = _load_average()
        rounds = run_rounds(suite, contenders, args.rounds)
        load = {"before_timing": load_before, "after_timing": _load_average()}
        elapsed = time.perf_counter() - started
        for c in contenders:
            c.kernels = c.kernel_probe()
            c.close()
    return Run(name, suite, contenders, skipped, rounds, load, elapsed, record)


def print_run(run: Run, threads: int) -> None:
    say(
        f"\n== {run.name}: {threads} threads, {run.rounds} interleaved rounds; values are medians "
        "over rounds, ×eager and headline ratios medians of per-round ratios =="
    )
    for w in run.suite.workloads:
        say(f"  {w.column:>8}: {w.description}")
    say(f"  fidelity: {run.suite.fidelity_note}")
    for label, reason in run.skipped.items():
        say(f"  skipped {label}: {reason}")
    # the load average counts this benchmark's own threads: warn about what others add
    cpus = os.cpu_count() or 1
    others = max(x for x in (*run.load.values(), 0.0) if x is not None) - min(threads, cpus)
    if others > 0.5:
        say(
            f"  WARNING: other processes add about {others:.1f} to the load average on "
            f"{cpus} CPUs, so even interleaved ratios are noisy; rerun on a quiet machine"
        )
    if run.peaks:
        flops = run.suite.info["flop_per_sample"]
        say(
            "  %pk: share of this machine's measured GEMM peak (benchmarks/peak.py, "
            f"{threads} threads: "
            + ", ".join(f"{p.precision.upper()} {p.gops:,.0f}" for p in run.peaks.values())
            + " GOP/s) in the contender's compute precision; "
            + ", ".join(f"{k} = {v / 1e9:.3g} GFLOP/sample" for k, v in flops.items())
        )
    say("\n" + table(run.suite, run.contenders, run.peaks) + "\n")
    say(headline_text(run.headline, run.suite))
    for c in run.contenders:
        if c.kernels:
            say(f"  kernels, {c.label}: {c.kernels}")
    say(
        f"\n{run.name}: benchmark took {run.elapsed:.0f} s (excluding accelerate); 1-min load "
        f"average {run.load['before_timing']} before timing, {run.load['after_timing']} after, "
        f"on {cpus} CPUs\n"
    )


def run_json(run: Run, threads: int) -> dict[str, Any]:
    eager = run.contenders[0]
    return {
        **run.record,
        "model": run.name,
        "threads": threads,
        "rounds": run.rounds,
        "workloads": {w.key: w.description for w in run.suite.workloads},
        "fidelity": run.suite.fidelity_note,
        "suite": run.suite.info,
        "skipped": run.skipped,
        "contenders": [contender_json(c, run.suite, eager, run.peaks) for c in run.contenders],
        "peaks_gops": {k: p.gops for k, p in run.peaks.items()},
        "headline": run.headline,
        "benchmark_s": run.elapsed,
        "load_average_1min": run.load,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from inferno.config import default_threads

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=[*MODELS, "all"], default="all")
    parser.add_argument(
        "--plan",
        type=Path,
        help="a plan folder (REPO/<model>/<version>); else accelerate runs first",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=default_threads(),
        help="threads for every contender (default: all cores)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help=f"interleaved timing rounds (default: at least {MIN_ROUNDS}, more while the timing "
        f"has run under {AUTO_TIMING_S:g} s, at most {MAX_ROUNDS})",
    )
    parser.add_argument(
        "--repository",
        type=Path,
        help="keep accelerate's output here (default: a temporary folder, removed at the end)",
    )
    parser.add_argument(
        "--json", type=Path, default=DEFAULT_JSON, help=f"results file (default {DEFAULT_JSON})"
    )
    args = parser.parse_args(argv)
    if args.plan is not None and args.model == "all":
        parser.error("--plan PATH belongs to one model: add --model minilm or --model digits")
    if args.plan is not None and not (args.plan / "plan.json").is_file():
        parser.error(f"--plan {args.plan}: expected a version folder with plan.json, found none")
    if args.threads < 1 or (args.rounds is not None and args.rounds < 1):
        parser.error(f"--threads and --rounds must be >= 1, got {args.threads} and {args.rounds}")
    return args


def save(path: Path, entries: dict[str, dict[str, Any]]) -> None:
    """Merge this run's models into the results file, keeping the other models' entries."""
    data: dict[str, Any] = {}
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError:
            say(f"note: {path} was not valid JSON; starting it afresh")
    data.setdefault("models", {}).update(entries)
    data["benchmark"] = "accelerate_cpu"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from inferno.hardware import detect

    cpu = detect().cpu
    command = shlex.join(["python", *sys.argv])
    isa = ", ".join(f for f, on in cpu.features.items() if on)
    say(f"CPU: {cpu.model} ({cpu.usable_cores} usable cores; ISA {isa}); {command}")
    import peak

    def show(peaks: dict[str, Any]) -> str:
        return ", ".join(
            f"{p.precision.upper()} {p.gops:,.0f} GOP/s ({p.engine})" for p in peaks.values()
        )

    before = peak.measure(args.threads)
    say(f"measured GEMM peak: {show(before)}")
    runs = [bench_model(name, args) for name in (MODELS if args.model == "all" else (args.model,))]
    after = peak.measure(args.threads)
    peaks = peak.merge(before, after)
    say(f"measured GEMM peak again: {show(after)}; %pk divides by the higher: {show(peaks)}")
    entries = {}
    for run in runs:
        run.peaks = peaks
        print_run(run, args.threads)
        entry = run_json(run, args.threads)
        entry.update(
            command=command,
            cpu=cpu.model,
            cpu_features=cpu.features,
            date=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        entries[run.name] = entry
    save(args.json, entries)
    say(f"results: {args.json}")


if __name__ == "__main__":
    main()
