"""MiniLM on a CUDA GPU: inferno's plan against what a PyTorch user would write, side by side.

Candidates (one process, the same feeds): PyTorch eager FP32 (baseline and fidelity reference),
eager FP16 (``module.half()``), ``torch.compile(module.half(), dynamic=False)`` (default mode;
static shapes, so each shape gets its own specialized kernels: the strongest torch.compile
baseline, not one whose dims turned dynamic after a recompile), inferno's plan
(``inferno.accelerate(model, device="cuda")`` with default settings, or ``--plan``) and inferno's
CPU plan (``device="cpu"``, or ``--cpu-plan``). Each takes numpy int64 feeds and returns numpy
float32: host<->device copies are in every timing, as when serving. Shapes: batch 1, 32, 256 x
128 random token ids (1000..29000, full mask, seeded, 4 sets rotated); batch 32 of real short
sentences (<= 16 tokens, 3 sets, padded per set); batch 1 of 32 real short sentences rotated.

Timing: every candidate runs every input set first (compilation, CUDA graph capture and
autotuning stay out of the figures); calls per cell are sized to ~1 s (at most ``--repeats``).
Then ``--rounds`` rounds, shape by shape, candidates in rotating order, each timed twice per
round (second pass in reverse order). Values: medians over cells; ratios: medians of per-cell
throughput ratios; spread: median gap between a candidate's two passes. The device is
synchronized before every clock read. Energy: a separate loop of >= ``MIN_ENERGY_WINDOW_S`` per
candidate x shape in ``inferno.hardware.power.EnergyMeter`` (GPU board via NVML, CPU packages via RAPL).

Reproduce (repository root)::

    python benchmarks/gpu.py                # accelerates minilm for cuda and for cpu first
    python benchmarks/gpu.py --plan benchmarks/results/gpu-repository/minilm/1 --skip-cpu-plan
    python benchmarks/gpu.py --smoke        # no GPU: a tiny CPU run that checks the script

Writes ``benchmarks/results/gpu.json`` (``gpu-smoke.json`` with ``--smoke``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

Feeds = dict[str, np.ndarray]
RunFn = Callable[[Feeds], np.ndarray]

RESULTS = Path(__file__).resolve().parent / "results"
NO_GPU = "needs a CUDA GPU; run with --smoke to check the script on the CPU"
SMOKE_LABEL = "SMOKE (CPU) — not a GPU figure"
SMOKE_ACCELERATE = {"max_eval_samples": 64, "repeats": 5, "variants": ("fp32", "int8-dynamic")}
SEED, VOCAB = 20261122, (1000, 29000)
INPUT_SETS, SHORT_TOKENS = 4, 16
MIN_REPS, WARMUP_PASSES = 3, 2
PAUSE_S = 0.05
"""After each timed cell: lets a CPU runtime's spinning worker threads go idle."""
EAGER, COMPILED, PLAN = "eager-fp32", "compile-fp16", "plan"
_prefix = ""


def say(text: str = "") -> None:
    for line in text.splitlines() or [""]:
        print(f"{_prefix}{line}", flush=True)


@dataclass(frozen=True)
class Shape:
    key: str
    description: str
    batch: int
    sets: tuple[Feeds, ...]


@dataclass(frozen=True)
class Sample:
    throughput: float
    p50_ms: float
    p90_ms: float
    calls: int


@dataclass
class Candidate:
    key: str
    label: str
    device: str
    run: RunFn
    close: Callable[[], None] = lambda: None
    reps: dict[str, int] = field(default_factory=dict)
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    cosine: dict[str, tuple[float, float]] = field(default_factory=dict)
    energy: dict[str, dict[str, Any]] = field(default_factory=dict)


class RecompileWatch(logging.Handler):
    """Catches dynamo giving up on recompiling (it then runs eager: the peer would be wrong)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.hits: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "recompile_limit" in message or "cache_size_limit" in message:
            self.hits.append(message.splitlines()[0][:200])


# --------------------------------------------------------------------------- inputs


def random_sets(names: tuple[str, ...], batch: int, seq: int, rng: np.random.Generator) -> tuple[Feeds, ...]:
    sets = []
    for _ in range(INPUT_SETS):
        ids = rng.integers(*VOCAB, size=(batch, seq), dtype=np.int64)
        cols = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        sets.append({n: cols[n] for n in names})
    return tuple(sets)


def build_shapes(model: Any, smoke: bool) -> list[Shape]:
    from inferno.models.zoo.minilm import sentences

    names, pre = model.signature.input_names, model.preprocessor
    rng = np.random.default_rng(SEED)
    batches, seq, short_batch = ((1, 4), 16, 4) if smoke else ((1, 32, 256), 128, 32)
    text = sentences()
    short = [s for s, n in zip(text, pre.token_counts(text), strict=True) if n <= SHORT_TOKENS]
    shapes = [
        Shape(f"rand-b{b}x{seq}", f"batch {b} x {seq} random token ids, full mask", b,
              random_sets(names, b, seq, rng))
        for b in batches
    ]
    chunks = [short[i : i + short_batch] for i in range(0, INPUT_SETS * short_batch, short_batch)]
    shapes.append(Shape(f"short-b{short_batch}", f"batch {short_batch} of real sentences of "
                        f"<= {SHORT_TOKENS} tokens, padded per set", short_batch,
                        tuple(pre.encode(c) for c in chunks if len(c) == short_batch)))
    shapes.append(Shape("short-b1", f"batch 1, {short_batch * 8} real short sentences rotated",
                        1, tuple(pre.encode([s]) for s in short[: short_batch * 8])))
    return shapes


# --------------------------------------------------------------------------- candidates


def torch_candidate(key: str, label: str, module: Any, device: str, names: tuple[str, ...]) -> Candidate:
    import torch

    def run(feeds: Feeds) -> np.ndarray:
        with torch.inference_mode():
            inputs = [torch.from_numpy(feeds[n]).to(device) for n in names]
            return module(*inputs).float().cpu().numpy()

    return Candidate(key, label, device, run)


def plan_candidate(key: str, label: str, folder: Path) -> Candidate:
    from inferno.repository.plan import load_plan

    runner = load_plan(folder, trust=True)  # written by this benchmark's own accelerate run
    index, plan = runner.signature.primary_output(), runner.plan
    text = f"{label}: {plan.variant} on {plan.runtime} ({plan.provider})"
    return Candidate(key, text, runner.device, lambda f: runner.runtime.run(f)[index], runner.close)


def accelerate(model: Any, device: str, repository: Path, smoke: bool, record: dict[str, Any]) -> Path:
    import inferno

    settings = SMOKE_ACCELERATE if smoke else {}
    say(f"running inferno.accelerate(minilm, device={device!r}, {settings or 'default settings'})")
    start = time.perf_counter()

    def progress(what: str, done: int, total: int) -> None:
        say(f"  [{done + 1}/{total}] {what} ({time.perf_counter() - start:.0f} s)")

    report = inferno.accelerate(model, repository=repository, device=device, progress=progress, **settings)
    c, seconds = report.chosen, time.perf_counter() - start
    say(f"  {seconds:.0f} s; chose {c.name} on {c.runtime} ({c.provider}): {c.reason}")
    say(f"  plan kept at {c.path} (reuse with --plan / --cpu-plan)")
    record[f"accelerate_{device}"] = {"seconds": seconds, "settings": settings,
                                      "chosen": report.to_dict()["chosen"]}
    return Path(c.path)


def build_candidates(model: Any, args: argparse.Namespace, device: str,
                     record: dict[str, Any], skipped: dict[str, str]) -> list[Candidate]:
    import torch

    # the plans first: accelerate then measures with none of the baselines loaded
    repo = RESULTS / ("gpu-smoke-repository" if args.smoke else "gpu-repository")
    folder = args.plan or accelerate(model, device, repo, args.smoke, record)
    cpu_folder = None
    if args.smoke or args.skip_cpu_plan:
        skipped["cpu-plan"] = "--smoke: the plan row is the CPU plan" if args.smoke else "--skip-cpu-plan"
    else:
        cpu_folder = args.cpu_plan or accelerate(model, "cpu", repo, False, record)
    record.update(plan_folder=str(folder), cpu_plan_folder=cpu_folder and str(cpu_folder))
    names = model.signature.input_names
    fp16 = "FP16" + (" (CPU, smoke only)" if device == "cpu" else "")
    cands = [torch_candidate(EAGER, "PyTorch eager FP32", model.torch_factory().to(device), device, names),
             torch_candidate("eager-fp16", f"PyTorch eager {fp16}", model.torch_factory().half().to(device),
                             device, names)]
    if args.smoke and not args.compile:
        skipped[COMPILED] = "--smoke without --compile"
    else:
        # Static shapes: one specialization per shape (a handful here), so the baseline gets its
        # best kernels at 256 x 128 instead of dynamic-shape ones; the limit leaves room for them.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        module = torch.compile(model.torch_factory().half().to(device), dynamic=False)
        cands.append(torch_candidate(COMPILED, f"torch.compile {fp16}", module, device, names))
    cands.append(plan_candidate(PLAN, "inferno plan" + (" (CPU, smoke settings)" if args.smoke else ""), folder))
    if cpu_folder is not None:
        cands.append(plan_candidate("cpu-plan", "inferno CPU plan", cpu_folder))
    return cands


# --------------------------------------------------------------------------- timing


def time_cell(c: Candidate, shape: Shape, calls: int, sync: Callable[[], None], first: int = 0) -> Sample:
    times = []
    for i in range(first, first + calls):
        feeds = shape.sets[i % len(shape.sets)]
        sync()
        start = time.perf_counter()
        c.run(feeds)
        sync()
        times.append(time.perf_counter() - start)
    return Sample(shape.batch * calls / sum(times), statistics.median(times) * 1e3,
                  float(np.percentile(times, 90)) * 1e3, calls)


def warm_up(c: Candidate, shapes: list[Shape], sync: Callable[[], None], cell_s: float,
            cap: int, outputs: dict[str, np.ndarray]) -> None:
    """Compile/capture on every input set, size the calls per cell, compute fidelity."""
    for shape in shapes:
        for _ in range(WARMUP_PASSES - 1):
            for feeds in shape.sets:
                c.run(feeds)
        per_call = [time_cell(c, shape, 1, sync, i).p50_ms / 1e3 for i in range(len(shape.sets))]
        c.reps[shape.key] = max(MIN_REPS, min(cap, math.ceil(cell_s / statistics.median(per_call))))
        out = np.concatenate([np.asarray(c.run(f), dtype=np.float64) for f in shape.sets])
        ref = outputs.setdefault(shape.key, out)  # the first candidate (eager FP32) is the reference
        cos = np.sum(out * ref, 1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1))
        c.cosine[shape.key] = (float(np.mean(cos)), float(np.min(cos)))
        c.samples[shape.key] = []


def warm_all(cands: list[Candidate], shapes: list[Shape], sync: Callable[[], None], cell_s: float,
             cap: int, skipped: dict[str, str]) -> list[Candidate]:
    """Warm every candidate up; one that fails is dropped (with why), except the reference."""
    outputs: dict[str, np.ndarray] = {}
    kept = []
    for c in cands:
        say(f"warming up {c.label}")
        try:
            warm_up(c, shapes, sync, cell_s, cap, outputs)
            kept.append(c)
        except Exception as exc:  # one failing candidate must not lose the others' figures
            if c.key == EAGER:
                raise
            skipped[c.key] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            say(f"  dropped {c.key}: {skipped[c.key]}")
            c.close()
    return kept


def run_rounds(cands: list[Candidate], shapes: list[Shape], rounds: int, sync: Callable[[], None]) -> None:
    for r in range(rounds):
        started = time.perf_counter()
        order = cands[r % len(cands):] + cands[: r % len(cands)]
        for shape in shapes:
            for c in order + order[::-1]:  # each candidate twice per round: the spread
                c.samples[shape.key].append(time_cell(c, shape, c.reps[shape.key], sync))
                time.sleep(PAUSE_S)
        say(f"  round {r + 1}/{rounds} ({time.perf_counter() - started:.1f} s)")


def meter_device(c: Candidate) -> str:
    return "cuda:0" if c.device.startswith("cuda") else "cpu"


def energy_reason(device: str) -> str | None:
    """None when ``device`` has a readable energy counter, else why not."""
    from inferno.hardware.power import EnergyMeter

    if EnergyMeter.available(device):
        return None
    with EnergyMeter(device) as probe:  # an empty region: only to learn why
        pass
    return probe.unavailable or f"no energy counter for {device}"


def measure_energy(c: Candidate, shape: Shape, sync: Callable[[], None]) -> dict[str, Any]:
    """Joules per inference over a loop of at least MIN_ENERGY_WINDOW_S on this shape alone."""
    from inferno.hardware.power import MIN_ENERGY_WINDOW_S, EnergyMeter

    count = 0
    sync()
    with EnergyMeter(meter_device(c)) as meter:
        start = time.perf_counter()
        while time.perf_counter() - start < MIN_ENERGY_WINDOW_S:
            c.run(shape.sets[count % len(shape.sets)])
            count += 1
        sync()
    return {"joules_per_inference": meter.joules_per(count * shape.batch), "source": meter.source,
            "seconds": meter.seconds, "inferences": count * shape.batch, "unavailable": meter.unavailable}


# --------------------------------------------------------------------------- results


def ratio(c: Candidate, peer: Candidate | None, key: str) -> float | None:
    if peer is None:
        return None
    pairs = zip(c.samples[key], peer.samples[key], strict=True)
    return statistics.median(a.throughput / b.throughput for a, b in pairs)


def spread(c: Candidate, key: str) -> float:
    s = c.samples[key]
    gaps = [abs(a.throughput - b.throughput) / ((a.throughput + b.throughput) / 2)
            for a, b in zip(s[0::2], s[1::2], strict=True)]
    return statistics.median(gaps)


def summary(c: Candidate, key: str, eager: Candidate, compiled: Candidate | None) -> dict[str, Any]:
    s = c.samples[key]
    return {
        "candidate": c.key, "label": c.label, "shape": key, "calls_per_cell": c.reps[key],
        "throughput_per_s": statistics.median(x.throughput for x in s),
        "p50_ms": statistics.median(x.p50_ms for x in s),
        "p90_ms": statistics.median(x.p90_ms for x in s),
        "vs_eager_fp32": ratio(c, eager, key), "vs_compile_fp16": ratio(c, compiled, key),
        "spread": spread(c, key), "cosine_mean": c.cosine[key][0], "cosine_min": c.cosine[key][1],
        **c.energy.get(key, {"joules_per_inference": None}), "cells": [asdict(x) for x in s],
    }


def checks(rows: list[dict[str, Any]], big: str, smoke: bool) -> list[tuple[str, str]]:
    """The issue's acceptance checks: (status, what) each."""
    cell = {(r["candidate"], r["shape"]): r for r in rows}
    plan, short = cell.get((PLAN, big)), cell.get((PLAN, "short-b1"))
    tag = f" [{SMOKE_LABEL}: {big} stands for rand-b256x128]" if smoke else ""
    out = []
    if plan is not None:
        ok = plan["vs_eager_fp32"] >= 8 and plan["cosine_mean"] >= 0.999
        out.append(("PASS" if ok else "FAIL", f"plan >= 8x eager FP32 at {big} ({plan['vs_eager_fp32']:.2f}x) "
                    f"with cosine mean >= 0.999 ({plan['cosine_mean']:.5f}){tag}"))
        vs = plan["vs_compile_fp16"]
        out.append(("SKIP" if vs is None else "PASS" if vs >= 1.2 else "FAIL",
                    f"plan >= 1.2x torch.compile FP16 at {big} ("
                    f"{'no torch.compile row' if vs is None else f'{vs:.2f}x'}){tag}"))
    if short is not None:
        out.append(("PASS" if short["p50_ms"] <= 1.0 else "FAIL",
                    f"plan batch-1 short-sentence p50 <= 1 ms ({short['p50_ms']:.3f} ms)"
                    + (f" [{SMOKE_LABEL}]" if smoke else "")))
    return out


def table(rows: list[dict[str, Any]]) -> str:
    head = ["candidate", "shape", "seq/s", "p50 ms", "p90 ms", "×eager", "×compile", "spread",
            "cos mean", "cos min", "J/inf"]

    def x(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}x"

    body = [[r["candidate"], r["shape"], f"{r['throughput_per_s']:.1f}", f"{r['p50_ms']:.3f}",
             f"{r['p90_ms']:.3f}", x(r["vs_eager_fp32"]), x(r["vs_compile_fp16"]),
             f"{r['spread'] * 100:.1f}%", f"{r['cosine_mean']:.6f}", f"{r['cosine_min']:.6f}",
             "-" if r["joules_per_inference"] is None else f"{r['joules_per_inference']:.4g}"]
            for r in rows]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths, strict=True)))
             for row in [head, *body]]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def environment(cuda: bool) -> dict[str, Any]:
    import onnxruntime
    import torch

    import inferno
    from inferno.hardware import detect

    hw = detect()
    gpu = hw.gpus[0] if hw.gpus else None
    return {
        "device": torch.cuda.get_device_name(0) if cuda else f"CPU: {hw.cpu.model}",
        "driver": gpu.driver if gpu else None, "cuda": torch.version.cuda, "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__, "ort_providers": onnxruntime.get_available_providers(),
        "inferno": inferno.__version__, "python": platform.python_version(), "cpu": hw.cpu.model,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }


# --------------------------------------------------------------------------- driver


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--repeats", type=int, help="most calls per timed cell (default 200; 10 with --smoke)")
    p.add_argument("--plan", type=Path, help="a plan folder to time instead of running accelerate(device='cuda')")
    p.add_argument("--cpu-plan", type=Path, help="a CPU plan folder instead of accelerate(device='cpu')")
    p.add_argument("--skip-cpu-plan", action="store_true", help="leave the CPU plan out")
    p.add_argument("--smoke", action="store_true", help="no GPU: tiny sizes on the CPU to check the script")
    p.add_argument("--compile", action="store_true", help="with --smoke: include torch.compile (slow on CPU)")
    args = p.parse_args(argv)
    for name in ("plan", "cpu_plan"):
        folder = getattr(args, name)
        if folder is not None and not (folder / "plan.json").is_file():
            p.error(f"--{name.replace('_', '-')} {folder}: expected a version folder with plan.json, found none")
    if args.rounds < 1 or (args.repeats is not None and args.repeats < MIN_REPS):
        p.error(f"--rounds must be >= 1 and --repeats >= {MIN_REPS}, got {args.rounds} and {args.repeats}")
    args.repeats = args.repeats or (10 if args.smoke else 200)
    args.json = RESULTS / ("gpu-smoke.json" if args.smoke else "gpu.json")
    return args


def bench(args: argparse.Namespace, cuda: bool, record: dict[str, Any]) -> list[dict[str, Any]]:
    import torch

    from inferno.models.zoo import load_bundled

    device, watch = ("cuda" if cuda else "cpu"), RecompileWatch()
    sync: Callable[[], None] = torch.cuda.synchronize if cuda else (lambda: None)
    logging.getLogger("torch._dynamo").addHandler(watch)
    model = load_bundled("minilm")
    shapes = build_shapes(model, args.smoke)
    skipped: dict[str, str] = {}
    cands = build_candidates(model, args, device, record, skipped)
    cands = warm_all(cands, shapes, sync, 0.2 if args.smoke else 1.0, args.repeats, skipped)
    say(f"timing {args.rounds} rounds, calls per cell: {[(c.key, c.reps) for c in cands]}")
    record["float32_matmul_precision_at_timing"] = torch.get_float32_matmul_precision()
    run_rounds(cands, shapes, args.rounds, sync)
    reasons = {d: energy_reason(d) for d in sorted({meter_device(c) for c in cands})}
    say("energy: " + ", ".join(f"{d}: {why or 'metered'}" for d, why in reasons.items()))
    for c in cands:
        for shape in shapes if reasons[meter_device(c)] is None else ():
            c.energy[shape.key] = measure_energy(c, shape, sync)
    eager = cands[0]
    compiled = next((c for c in cands if c.key == COMPILED), None)
    rows = [summary(c, s.key, eager, compiled) for c in cands for s in shapes]
    for c in cands:
        c.close()
    record.update(shapes={s.key: s.description for s in shapes}, skipped=skipped,
                  candidates={c.key: c.label for c in cands}, dynamo_recompile_limit_hits=watch.hits,
                  energy_unavailable=reasons,
                  big_shape=max((s for s in shapes if s.key.startswith("rand")), key=lambda s: s.batch).key)
    return rows


def main(argv: list[str] | None = None) -> int:
    global _prefix
    args = parse_args(argv)
    import torch

    cuda = torch.cuda.is_available() and not args.smoke
    if not cuda and not args.smoke:
        print(NO_GPU, file=sys.stderr)
        return 2
    _prefix = f"{SMOKE_LABEL} | " if args.smoke else ""
    env = environment(cuda)
    command = shlex.join(["python", *sys.argv])
    say(f"{env['device']}; driver {env['driver']}, CUDA {env['cuda']}, torch {env['torch']}, "
        f"onnxruntime {env['onnxruntime']} {env['ort_providers']}; {command}")
    record: dict[str, Any] = {"benchmark": "gpu", "smoke": args.smoke, "command": command, **env,
                              "date": datetime.now(UTC).isoformat(timespec="seconds"),
                              "rounds": args.rounds, "repeats_cap": args.repeats}
    rows = bench(args, cuda, record)
    results = checks(rows, record["big_shape"], args.smoke)
    record.update(rows=rows, checks=[{"status": s, "check": t} for s, t in results])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    for key, why in record["skipped"].items():
        say(f"skipped {key}: {why}")
    for hit in record["dynamo_recompile_limit_hits"]:
        say(f"WARNING torch.compile fell back to eager: {hit}")
    say(f"results: {args.json}")
    for status, text in results:
        say(f"{status}: {text}")
    say(f"\n{env['device']} | torch {env['torch']} | {args.rounds} rounds x 2 passes; medians; "
        "ratios are throughput, medians of per-cell ratios; spread = gap between a round's 2 passes")
    say("\n".join(f"  {k}: {label}" for k, label in record["candidates"].items()))
    say(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
