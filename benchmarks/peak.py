"""This machine's achievable dense GEMM throughput, FP32 / BF16 / INT8, on N threads.

Every benchmark table that says "% of peak" divides by these figures, measured on the CPU it
ran on, never by a datasheet number. Square ``n``³ matrix products (n = 512, 1024 and 2048:
the small ones fit the caches, the large ones amortize packing and threading) are timed with
each engine that is installed, and the best of sizes and engines is the peak:

- ``torch``: oneDNN / MKL through PyTorch: ``a @ b`` in FP32 and BF16, ``torch._int_mm`` in INT8
  (int8 × int8 → int32).
- ``openvino``: one MatMul graph compiled by OpenVINO's CPU plugin: FP32 and BF16 by the
  precision hint; INT8 from a graph with QuantizeLinear/DequantizeLinear on both operands,
  which the plugin runs as an integer GEMM (the same kernels an NNCF model gets).
- ``onnxruntime``: the same graphs on ONNX Runtime's CPU provider (MLAS): FP32, and INT8
  from the QDQ graph, which ORT fuses into an integer MatMul.

A shared machine's speed drifts: benchmarks that divide by the peak measure it before and
after their timing and keep the higher figure (``merge``).

Each figure is the best of ``--reps`` timed products after warm-up (a peak is the fastest
the machine can do, not its typical speed), counted as 2·n³ operations. The spread
between engines is printed too: one engine far below the other means that engine lacks the
ISA path, not that the machine is slow.

Run::

    python benchmarks/peak.py                  # all cores
    python benchmarks/peak.py --threads 1 --json benchmarks/results/peak.json

``measure(threads)`` is what other benchmarks import.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

SIZES = (512, 1024, 2048)
"""Square sizes tried; the best counts (small ones fit the caches, large ones amortize packing)."""
REPS = 8
WARMUP = 3
PRECISIONS = ("fp32", "bf16", "int8")


@dataclass(frozen=True)
class Peak:
    precision: str
    gops: float
    """Best engine's throughput, 10⁹ multiply-add operations ×2 per second."""
    engine: str
    by_engine: dict[str, float]


def best_rate(run: Callable[[], object], size: int, reps: int) -> float:
    """GOP/s of the fastest of ``reps`` calls, after WARMUP untimed ones."""
    for _ in range(WARMUP):
        run()
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def torch_rates(threads: int, size: int, reps: int) -> dict[str, float]:
    import torch

    torch.set_num_threads(threads)
    rates = {}
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        rates[precision] = best_rate(lambda a=a, b=b: a @ b, size, reps)
    qa = torch.randint(-127, 127, (size, size), dtype=torch.int8)
    qb = torch.randint(-127, 127, (size, size), dtype=torch.int8)
    with contextlib.suppress(RuntimeError):  # a build without the CPU int8 kernel
        rates["int8"] = best_rate(lambda: torch._int_mm(qa, qb), size, reps)
    return rates


def _matmul_graph(size: int, quantized: bool) -> bytes:
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    weight = rng.normal(0, 0.05, (size, size)).astype(np.float32)
    inits = [onnx.numpy_helper.from_array(weight, "w")]
    nodes = []
    a, b = "x", "w"
    if quantized:
        inits += [
            onnx.numpy_helper.from_array(np.array(0.05, np.float32), "s"),
            onnx.numpy_helper.from_array(np.array(0, np.int8), "z"),
        ]
        for name in ("x", "w"):
            nodes += [
                helper.make_node("QuantizeLinear", [name, "s", "z"], [f"{name}_q"]),
                helper.make_node("DequantizeLinear", [f"{name}_q", "s", "z"], [f"{name}_dq"]),
            ]
        a, b = "x_dq", "w_dq"
    nodes.append(helper.make_node("MatMul", [a, b], ["y"]))
    graph = helper.make_graph(
        nodes, "peak",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [size, size])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    return model.SerializeToString()


def openvino_rates(threads: int, size: int, reps: int) -> dict[str, float]:
    import openvino as ov

    core = ov.Core()
    x = np.random.default_rng(1).normal(0, 1, (size, size)).astype(np.float32)
    rates = {}
    for precision, hint, quantized in (
        ("fp32", "f32", False), ("bf16", "bf16", False), ("int8", "f32", True)
    ):
        model = core.read_model(_matmul_graph(size, quantized), b"")
        compiled = core.compile_model(
            model, "CPU",
            {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads,
             "PERFORMANCE_HINT": "LATENCY"},
        )
        request = compiled.create_infer_request()
        rates[precision] = best_rate(lambda r=request: r.infer({0: x}), size, reps)
    return rates


def onnxruntime_rates(threads: int, size: int, reps: int) -> dict[str, float]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    x = np.random.default_rng(1).normal(0, 1, (size, size)).astype(np.float32)
    rates = {}
    for precision, quantized in (("fp32", False), ("int8", True)):
        session = ort.InferenceSession(
            _matmul_graph(size, quantized), options, providers=["CPUExecutionProvider"]
        )
        rates[precision] = best_rate(lambda s=session: s.run(None, {"x": x}), size, reps)
    return rates


ENGINES: dict[str, tuple[str, Callable[[int, int, int], dict[str, float]]]] = {
    "torch": ("torch", torch_rates),
    "openvino": ("openvino", openvino_rates),
    "onnxruntime": ("onnxruntime", onnxruntime_rates),
}


def measure(
    threads: int, sizes: tuple[int, ...] = SIZES, reps: int = REPS
) -> dict[str, Peak]:
    """The peak per precision over every installed engine and size (see the module doc)."""
    by_engine: dict[str, dict[str, float]] = {}
    for name, (module, rates) in ENGINES.items():
        if importlib.util.find_spec(module) is None:
            continue
        best: dict[str, float] = {}
        for size in sizes:
            for precision, rate in rates(threads, size, reps).items():
                best[precision] = max(best.get(precision, 0.0), rate)
        by_engine[name] = best
    peaks = {}
    for precision in PRECISIONS:
        seen = {e: r[precision] for e, r in by_engine.items() if precision in r}
        if seen:
            engine = max(seen, key=lambda e: seen[e])
            peaks[precision] = Peak(precision, seen[engine], engine, seen)
    return peaks


def merge(*runs: dict[str, Peak]) -> dict[str, Peak]:
    """Per precision, the highest of several ``measure`` results (e.g. before and after a run)."""
    merged: dict[str, Peak] = {}
    for run in runs:
        for precision, peak in run.items():
            if precision not in merged or peak.gops > merged[precision].gops:
                merged[precision] = peak
    return merged


def main(argv: list[str] | None = None) -> None:
    from inferno.config import default_threads
    from inferno.hardware import detect

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--reps", type=int, default=REPS)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.threads < 1 or min(args.sizes) < 64 or args.reps < 1:
        parser.error("--threads and --reps must be >= 1 and every size >= 64")
    cpu = detect().cpu
    flags = [f for f, on in cpu.features.items() if on]
    print(f"CPU: {cpu.model}, {args.threads} threads, ISA {', '.join(flags)}")
    peaks = measure(args.threads, tuple(args.sizes), args.reps)
    print(f"{'precision':<10} {'peak GOP/s':>10}  engine     per engine")
    for p in peaks.values():
        engines = ", ".join(f"{e} {r:,.0f}" for e, r in p.by_engine.items())
        print(f"{p.precision:<10} {p.gops:>10,.0f}  {p.engine:<9}  {engines}")
    if args.json:
        record: dict[str, Any] = {
            "command": shlex.join(["python", *sys.argv]),
            "cpu": cpu.model,
            "cpu_features": flags,
            "threads": args.threads,
            "sizes": args.sizes,
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "peaks": {k: asdict(v) for k, v in peaks.items()},
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
