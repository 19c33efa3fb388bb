"""Triton's statistics, kept as one accounting: per batch, the pipeline's compute_input /
compute_infer / compute_output; ``batch_stats`` counts each execution once, ``inference_stats``
once per request of the batch.

Pure logic with fakes: pipelines are stood in for by ``StageTimes`` that a fake ``execute``
advances by set amounts (binary fractions of a second, so every sum is exact); the batcher is
the real one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferno.monitoring.metrics import ServingMetrics
from inferno.serving.batcher import BatchRecord, DynamicBatcher
from inferno.serving.pipelines import StageTimes
from inferno.serving.stats import VersionStats

STAGES = ("compute_input", "compute_infer", "compute_output")
WAIT_S = 5.0


def stats_for(stages: Sequence[StageTimes]) -> tuple[VersionStats, ServingMetrics]:
    metrics = ServingMetrics()
    bound = metrics.bind("m", "1", runtime="onnxruntime", provider="CPUExecutionProvider",
                         precision="fp32", queue_depth=lambda: 0)
    return VersionStats(bound, stages), metrics


def advance(times: StageTimes, input_s: float, infer_s: float, output_s: float) -> None:
    """What a pipeline's ``execute`` adds to its times for one batch."""
    times.input_s += input_s
    times.infer_s += infer_s
    times.output_s += output_s


def ns(seconds: float) -> int:
    return round(seconds * 1e9)


def batch_stats(triton: dict[str, Any]) -> dict[int, dict[str, dict[str, int]]]:
    return {b["batch_size"]: {k: v for k, v in b.items() if k != "batch_size"} for b in triton["batch_stats"]}


def test_one_request_per_batch_makes_both_views_equal() -> None:
    times = StageTimes()
    stats, _ = stats_for([times])
    batches = [(1, (0.125, 0.5, 0.0625)), (1, (0.25, 0.75, 0.125)), (2, (0.5, 1.5, 0.25))]
    for rows, split in batches:
        advance(times, *split)
        stats.on_batch(BatchRecord(1, rows, (0.0,), 10.0))  # compute_s: the batch's wall time
    triton = stats.to_triton("m", "1")
    by_size = batch_stats(triton)
    assert by_size == {
        1: {"compute_input": {"count": 2, "ns": ns(0.375)}, "compute_infer": {"count": 2, "ns": ns(1.25)},
            "compute_output": {"count": 2, "ns": ns(0.1875)}},
        2: {"compute_input": {"count": 1, "ns": ns(0.5)}, "compute_infer": {"count": 1, "ns": ns(1.5)},
            "compute_output": {"count": 1, "ns": ns(0.25)}},
    }
    for stage in STAGES:
        inference = triton["inference_stats"][stage]
        assert inference["count"] == sum(b[stage]["count"] for b in by_size.values()) == 3
        assert inference["ns"] == sum(b[stage]["ns"] for b in by_size.values())


def test_inference_stats_count_each_request_of_a_batch() -> None:
    times = StageTimes()
    stats, _ = stats_for([times])
    advance(times, 0.25, 1.0, 0.125)
    stats.on_batch(BatchRecord(3, 4, (0.0, 0.0, 0.0), 2.0))  # 3 requests, 4 rows
    advance(times, 0.5, 2.0, 0.25)
    stats.on_batch(BatchRecord(1, 4, (0.0,), 3.0))
    triton = stats.to_triton("m", "1")
    assert triton["inference_stats"]["compute_infer"] == {"count": 4, "ns": ns(3 * 1.0 + 1 * 2.0)}
    assert triton["inference_stats"]["compute_input"] == {"count": 4, "ns": ns(3 * 0.25 + 0.5)}
    assert triton["inference_stats"]["compute_output"] == {"count": 4, "ns": ns(3 * 0.125 + 0.25)}
    assert batch_stats(triton)[4]["compute_infer"] == {"count": 2, "ns": ns(3.0)}
    assert triton["execution_count"] == 2 and triton["inference_count"] == 8


def test_the_identity_holds_exactly_for_durations_that_are_not_binary_fractions() -> None:
    times = StageTimes()
    stats, _ = stats_for([times])
    expected = {stage: 0 for stage in STAGES}
    for i in range(200):
        split = (0.000137 * (i % 7 + 1), 0.00123 * (i % 5 + 1), 0.0000311 * (i % 3 + 1))
        requests = i % 4 + 1
        advance(times, *split)
        stats.on_batch(BatchRecord(requests, requests, (0.0,) * requests, 1.0))
        for stage, seconds in zip(STAGES, split, strict=True):
            expected[stage] += requests * ns(seconds)
    triton = stats.to_triton("m", "1")
    by_size = batch_stats(triton)
    for stage in STAGES:
        assert triton["inference_stats"][stage]["ns"] == sum(
            size * b[stage]["ns"] for size, b in by_size.items()  # here rows == requests
        ), stage
        assert abs(triton["inference_stats"][stage]["ns"] - expected[stage]) <= 200 * 4  # ns rounding of deltas


def test_a_failed_batch_keeps_its_own_time() -> None:
    """Time a pipeline spent on a batch that then failed is that batch's, not the next one's."""
    times = StageTimes()
    stats, _ = stats_for([times])
    advance(times, 0.25, 0.5, 0.0)  # it ran, then raised
    stats.on_batch(BatchRecord(1, 3, (0.0,), 1.0))
    advance(times, 0.125, 0.25, 0.0625)
    stats.on_batch(BatchRecord(1, 1, (0.0,), 1.0))
    assert batch_stats(stats.to_triton("m", "1"))[1]["compute_infer"] == {"count": 1, "ns": ns(0.25)}


def test_prometheus_counters_keep_working() -> None:
    times = StageTimes()
    stats, metrics = stats_for([times])
    advance(times, 0.25, 0.5, 0.125)
    stats.on_batch(BatchRecord(2, 3, (0.5, 0.25), 1.0))
    labels = {"model": "m", "version": "1"}

    def value(name: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    assert value("inferno_inference_count_total") == 3
    assert value("inferno_inference_exec_count_total") == 1
    assert value("inferno_inference_queue_duration_us_total") == pytest.approx(0.75e6)
    assert value("inferno_inference_compute_duration_us_total") == pytest.approx(1.0e6)
    assert value("inferno_batch_size_count") == 1


class StagedExecute:
    """A fake pipeline ``execute``: advances its own StageTimes by a fixed split per batch."""

    def __init__(self, split: tuple[float, float, float]) -> None:
        self.times = StageTimes()
        self.split = split
        self.batches: list[int] = []
        self.entered = 0
        self.gate = threading.Event()

    def __call__(self, items: list[Any]) -> list[Any]:
        self.entered += 1
        if not self.gate.wait(WAIT_S):
            raise RuntimeError("the test never opened the gate")
        self.batches.append(len(items))
        advance(self.times, *self.split)
        return list(items)


def test_each_batch_is_charged_to_the_instance_that_ran_it() -> None:
    fast, slow = StagedExecute((0.125, 0.25, 0.0625)), StagedExecute((0.5, 1.0, 0.25))
    stats, _ = stats_for([fast.times, slow.times])

    async def until(condition: Any) -> None:
        async with asyncio.timeout(WAIT_S):
            while not condition():
                await asyncio.sleep(0.001)

    async def scenario() -> None:
        batcher: DynamicBatcher[Any, Any] = DynamicBatcher([fast, slow], max_batch_size=8, observer=stats)
        batcher.start()
        try:
            first = []
            for i in range(2):  # one at a time, so that each instance holds one request
                first.append(asyncio.create_task(batcher.submit(i)))
                await until(lambda n=i + 1: fast.entered + slow.entered == n)
            rest = [asyncio.create_task(batcher.submit(i)) for i in range(2, 9)]
            await until(lambda: batcher.queue_depth == 7)
            slow.gate.set()
            fast.gate.set()
            await asyncio.wait_for(asyncio.gather(*first, *rest), WAIT_S)
        finally:
            fast.gate.set()
            slow.gate.set()
            await batcher.close()

    asyncio.run(scenario())
    assert sum(fast.batches) + sum(slow.batches) == 9 and max(fast.batches + slow.batches) == 7
    assert fast.batches and slow.batches
    triton = stats.to_triton("m", "1")
    for stage, (f, s) in zip(STAGES, zip(fast.split, slow.split, strict=True), strict=True):
        assert triton["inference_stats"][stage] == {
            "count": 9, "ns": sum(n * ns(f) for n in fast.batches) + sum(n * ns(s) for n in slow.batches),
        }, stage
        assert sum(b[stage]["count"] for b in triton["batch_stats"]) == len(fast.batches) + len(slow.batches)
        assert sum(b[stage]["ns"] for b in triton["batch_stats"]) == (
            len(fast.batches) * ns(f) + len(slow.batches) * ns(s)
        )


def test_a_served_version_reports_one_accounting(tmp_path: Path) -> None:
    """Real pipelines (a tiny graph on ONNX Runtime, two instances) behind the real batcher:
    one request at a time, so each batch holds one request and the identity is exact."""
    from inferno.serving import ModelServeConfig
    from inferno.serving.manager import ServedVersion
    from inferno.serving.protocol import InferRequest, InputTensor

    from . import plans

    folder = plans.write_plan(tmp_path, "tiny", plans.relu())
    served = ServedVersion.build("tiny", 1, folder, ModelServeConfig(instances=2), ServingMetrics())
    sizes = [1, 2, 3, 1, 4, 2]

    async def scenario() -> None:
        served.start()
        try:
            for rows in sizes:
                x = np.ones((rows, 2), np.float32)
                request = InferRequest({"x": InputTensor("x", "FP32", x.shape, x)}, None, False)
                await served.infer(request, 0.0)
        finally:
            await served.close()

    asyncio.run(scenario())
    triton = served.stats.to_triton("tiny", "1")
    by_size = batch_stats(triton)
    assert {size: b["compute_infer"]["count"] for size, b in by_size.items()} == {1: 2, 2: 2, 3: 1, 4: 1}
    measured = [sum(getattr(p.times, f) for p in served.pipelines) for f in ("input_s", "infer_s", "output_s")]
    for stage, seconds in zip(STAGES, measured, strict=True):
        inference = triton["inference_stats"][stage]
        assert inference["count"] == len(sizes) == sum(b[stage]["count"] for b in by_size.values())
        assert inference["ns"] == sum(b[stage]["ns"] for b in by_size.values()), stage
        assert abs(inference["ns"] - ns(seconds)) <= len(sizes), stage  # each batch rounded to ns once
    assert triton["inference_stats"]["compute_infer"]["ns"] > 0
