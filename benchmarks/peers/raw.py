"""Contender (a): the raw in-process runtime, no server, the ceiling every server is held to.

Loads the plan with ``threads`` runtime threads and times ``predict`` + L2 normalization
(the same work a server does per batch, tokenization included) on the bundled minilm
sentences, taken in file order, at each batch size: a warm-up per batch size, then
``--slices`` rounds that each time every batch size for ``seconds / slices``, so that load
from elsewhere falls on all batch sizes alike. Prints one JSON object on
stdout: per batch size, sentences/s, batch latency p50/p99 (ms) and process CPU seconds per
sentence; plus the best batch size (the ceiling). The serving benchmark runs it under
``taskset`` like the servers.

    python benchmarks/peers/raw.py --repository model_repository --seconds 3
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import _common as oip
import numpy as np
import psutil

from inferno.models.zoo.minilm import sentences


class Sweep:
    """One batch size: cycles through the sentences, accumulating timings over its slices."""

    def __init__(self, runner: object, pool: list[str], batch: int) -> None:
        self.runner, self.pool, self.batch = runner, pool, batch
        self.cursor = 0
        self.latencies: list[float] = []
        self.elapsed = self.cpu = 0.0

    def _next(self) -> list[str]:
        picked = [self.pool[(self.cursor + i) % len(self.pool)] for i in range(self.batch)]
        self.cursor = (self.cursor + self.batch) % len(self.pool)
        return picked

    def run(self, seconds: float, *, record: bool = True) -> None:
        """Time calls for ``seconds`` (at least one call); ``record=False`` is a warm-up."""
        me = psutil.Process()
        cpu0, t0 = sum(me.cpu_times()[:2]), time.perf_counter()
        while True:
            texts = self._next()
            began = time.perf_counter()
            oip.embed(self.runner, texts)
            now = time.perf_counter()
            if record:
                self.latencies.append(now - began)
            if now - t0 >= seconds:
                break
        if record:
            self.elapsed += time.perf_counter() - t0
            self.cpu += sum(me.cpu_times()[:2]) - cpu0

    def result(self) -> dict[str, float]:
        done = self.batch * len(self.latencies)
        p50, p99 = (float(x) for x in np.percentile(np.array(self.latencies) * 1000.0, [50, 99]))
        return {
            "batch": self.batch,
            "calls": len(self.latencies),
            "sentences_per_s": done / self.elapsed,
            "p50_ms": p50,
            "p99_ms": p99,
            "cpu_s_per_sentence": self.cpu / done,
        }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repository", type=Path, required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batches", default="1,8,16,32,64")
    p.add_argument("--seconds", type=float, default=3.0, help="timed seconds per batch size")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds per batch size")
    p.add_argument("--slices", type=int, default=5, help="interleaved slices per batch size")
    p.add_argument("--text", type=Path, help="sentences, one per line (default: the bundled ones)")
    args = p.parse_args()
    folder = oip.plan_folder(args.repository)
    runner = oip.load_runner(folder, args.threads)
    pool = [line.strip() for line in args.text.read_text("utf-8").splitlines() if line.strip()] if args.text \
        else sentences()
    sweeps = [Sweep(runner, pool, int(b)) for b in args.batches.split(",")]
    for sweep in sweeps:
        sweep.run(args.warmup, record=False)
    # Round-robin slices: a burst of load from elsewhere hits every batch size alike.
    for _ in range(args.slices):
        for sweep in sweeps:
            sweep.run(args.seconds / args.slices)
    results = [sweep.result() for sweep in sweeps]
    for r in results:
        print(f"raw batch {r['batch']}: {r['sentences_per_s']:.1f} sentences/s", file=sys.stderr)
    best = max(results, key=lambda r: r["sentences_per_s"])
    json.dump(
        {
            "plan": str(folder),
            "threads": args.threads,
            "batches": results,
            "best_batch": best["batch"],
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
