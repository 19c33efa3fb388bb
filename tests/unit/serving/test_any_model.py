"""Serving models that are not a batch-first classifier: warm-up at the plan's shapes, state in
and out, batch axes other than 0, scalar inputs, and a plan that fails its warm-up.

Real plan folders of tiny graphs (``plans``) on ONNX Runtime; no server (the e2e tests have it).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferno.errors import ModelLoadError, UnknownModelError, UserInputError
from inferno.monitoring.metrics import ServingMetrics
from inferno.protocol.datatypes import datatype_of
from inferno.repository.plan import PlanRunner
from inferno.serving import ModelServeConfig, ServeConfig
from inferno.serving.app import InfernoApp
from inferno.serving.manager import ModelManager, ModelUnavailableError, ServedVersion, warm_up
from inferno.serving.pipelines import TensorPipeline, Work
from inferno.serving.protocol import InferRequest, InputTensor

from . import plans

STATE_SHAPES = {"input": [1, plans.SEQUENCE], "state": [2, 1, plans.STATE], "sr": []}


def request(feeds: dict[str, np.ndarray]) -> InferRequest:
    return InferRequest({n: InputTensor(n, datatype_of(a.dtype.name), tuple(a.shape), a) for n, a in feeds.items()},
                        None, False)


class CountingRuntime:
    """Wraps a runtime to count its calls and record the feeds' shapes."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.calls: list[dict[str, tuple[int, ...]]] = []

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.calls.append({n: a.shape for n, a in feeds.items()})
        return self.runtime.run(feeds)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.runtime, name)


@pytest.fixture
def stateful_folder(tmp_path: Path) -> Path:
    return plans.write_plan(tmp_path, "vad", plans.stateful(), STATE_SHAPES, profile=plans.stateful_samples(16))


@pytest.fixture
def stateful_pipeline(stateful_folder: Path) -> Iterator[TensorPipeline]:
    pipeline = TensorPipeline(PlanRunner(stateful_folder))
    yield pipeline
    pipeline.close()


# -- warm-up -------------------------------------------------------------------------------------


def test_warm_up_runs_at_the_plans_shapes(tmp_path: Path) -> None:
    folder = plans.write_plan(tmp_path, "det", plans.pad32(), {"x": [1, 3, 64, 64]})
    pipeline = TensorPipeline(PlanRunner(folder))
    try:
        assert pipeline.warmup_shapes() == {"x": (1, 3, 64, 64)}
        warm_up(pipeline)  # 8x8 would fail (below)
        assert pipeline.times.infer_s == 0.0, "warm-up is not counted as traffic"
    finally:
        pipeline.close()


def test_an_old_plan_warms_up_at_8_and_the_error_names_the_shapes_and_the_runtime_error(tmp_path: Path) -> None:
    folder = plans.write_plan(tmp_path, "det", plans.pad32())
    pipeline = TensorPipeline(PlanRunner(folder))
    try:
        assert pipeline.warmup_shapes() == {"x": (1, 3, 8, 8)}
        with pytest.raises(ModelLoadError) as info:
            warm_up(pipeline)
    finally:
        pipeline.close()
    message = str(info.value)
    assert "warm-up failed at input shapes {'x': [1, 3, 8, 8]}" in message
    assert "records no input shapes" in message and "--shape" in message and "['x']" in message
    assert "ONNXRuntimeError" in message  # the runtime's own words


def test_warm_up_takes_values_the_reference_data_had_where_zero_is_refused(stateful_pipeline: TensorPipeline) -> None:
    sample = stateful_pipeline.sample()
    assert {n: a.shape for n, a in sample.payload.items()} == {"input": (1, 512), "state": (2, 1, 4), "sr": ()}
    assert sample.payload["sr"].dtype == np.int64 and int(sample.payload["sr"]) == plans.SAMPLE_RATE
    assert not sample.payload["input"].any() and not sample.payload["state"].any()  # zeros: in their ranges
    warm_up(stateful_pipeline)  # sr 0 would fail the Reshape


def test_without_a_profile_zeros_are_fed_and_the_error_says_so(tmp_path: Path) -> None:
    folder = plans.write_plan(tmp_path, "vad", plans.stateful(), STATE_SHAPES)
    pipeline = TensorPipeline(PlanRunner(folder))
    try:
        assert int(pipeline.sample().payload["sr"]) == 0
        with pytest.raises(ModelLoadError, match=r"at the plan's input shapes .*'sr': \[\].*Reshape"):
            warm_up(pipeline)
    finally:
        pipeline.close()


# -- state in, state out -------------------------------------------------------------------------


def test_rows_are_counted_on_each_inputs_batch_axis(stateful_pipeline: TensorPipeline) -> None:
    assert stateful_pipeline.batch_axes == {"input": 0, "state": 1, "sr": None, "output": 0, "stateN": 1}
    assert not stateful_pipeline.batch_first
    assert stateful_pipeline.prepare(request(plans.stateful_feeds(3))).rows == 3
    feeds = plans.stateful_feeds(3)
    feeds["state"] = feeds["state"][:, :2]
    with pytest.raises(UserInputError, match=r"input 'state': expected batch 3 on axis 1 like input 'input', got 2"):
        stateful_pipeline.prepare(request(feeds))


def test_requests_share_a_call_along_their_batch_axes_and_get_their_own_state_back(
        stateful_pipeline: TensorPipeline) -> None:
    counting = CountingRuntime(stateful_pipeline.runner.runtime)
    stateful_pipeline.runner.runtime = counting
    model = plans.stateful()
    feeds = [plans.stateful_feeds(rows, seed) for rows, seed in ((1, 1), (3, 2), (2, 3))]
    works = [stateful_pipeline.prepare(request(f)) for f in feeds]
    outputs = stateful_pipeline.execute(works)
    assert counting.calls == [{"input": (6, 512), "state": (2, 6, 4), "sr": ()}], "one call, rows concatenated"
    for f, out in zip(feeds, outputs, strict=True):
        expected = plans.reference(model, f)
        assert out["stateN"].shape == (2, len(f["input"]), 4)
        np.testing.assert_allclose(out["output"], expected["output"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out["stateN"], expected["stateN"], rtol=1e-5, atol=1e-6)


def test_requests_with_different_unbatched_inputs_run_apart(stateful_pipeline: TensorPipeline) -> None:
    calls: list[dict[str, np.ndarray]] = []

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:  # this graph takes sr 16000 only
        calls.append(feeds)
        return [feeds["input"][:, :1], feeds["state"]]

    stateful_pipeline.runner.runtime.run = run  # type: ignore[method-assign]
    a, b, c = plans.stateful_feeds(1, 1), plans.stateful_feeds(2, 2), plans.stateful_feeds(1, 3)
    b["sr"] = np.array(8000, np.int64)
    outputs = stateful_pipeline.execute([stateful_pipeline.prepare(request(f)) for f in (a, b, c)])
    assert [(f["input"].shape[0], int(f["sr"])) for f in calls] == [(2, 16000), (2, 8000)]
    for f, out in zip((a, b, c), outputs, strict=True):
        np.testing.assert_array_equal(out["stateN"], f["state"])


def test_served_version_checks_rows_on_each_outputs_axis_and_reports_triton_shapes(stateful_folder: Path) -> None:
    served = ServedVersion.build("vad", 1, stateful_folder, ModelServeConfig(), ServingMetrics())
    try:
        work = Work(2, {}, ())
        served._check(work, {"output": np.zeros((2, 1)), "stateN": np.zeros((2, 2, 4))})  # state [2, batch, 4]
        with pytest.raises(RuntimeError, match=r"output 'stateN' of shape \[2, 3, 4\] .* 2 rows on axis 1"):
            served._check(work, {"output": np.zeros((2, 1)), "stateN": np.zeros((2, 3, 4))})
        meta = served.metadata(["1"])
        assert [t["shape"] for t in meta["inputs"]] == [[-1, -1], [2, -1, 4], []]
        assert [t["shape"] for t in meta["outputs"]] == [[-1, 1], [2, -1, 4]]
        config = served.model_config()
        assert config["max_batch_size"] == 0 and "dynamic_batching" not in config
        assert [t["dims"] for t in config["input"]] == [[-1, -1], [2, -1, 4], []]
        assert [t["data_type"] for t in config["input"]] == ["TYPE_FP32", "TYPE_FP32", "TYPE_INT64"]
    finally:
        asyncio.run(served.close())


def test_a_batch_first_model_keeps_tritons_batched_config(tmp_path: Path) -> None:
    folder = plans.write_plan(tmp_path, "det", plans.pad32(), {"x": [1, 3, 64, 64]})
    served = ServedVersion.build("det", 1, folder, ModelServeConfig(max_batch_size=8), ServingMetrics())
    try:
        config = served.model_config()
        assert config["max_batch_size"] == 8 and "dynamic_batching" in config
        assert config["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": [3, -1, -1]}]
    finally:
        asyncio.run(served.close())


def test_metadata_names_the_graphs_precision_beside_the_runtimes(tmp_path: Path) -> None:
    folder = plans.write_plan(tmp_path, "det", plans.pad32(), {"x": [1, 3, 64, 64]})
    plan = json.loads((folder / "plan.json").read_text())
    (folder / "plan.json").write_text(json.dumps({**plan, "graph_precision": "int8"}))  # as NNCF's
    served = ServedVersion.build("det", 1, folder, ModelServeConfig(), ServingMetrics())
    try:
        parameters = served.metadata(["1"])["parameters"]
        assert parameters["precision"] == "int8" and parameters["compute_precision"] == "fp32"
    finally:
        asyncio.run(served.close())


# -- a model that fails to load ------------------------------------------------------------------


def test_a_failed_model_is_unavailable_with_its_reason_and_the_others_serve(tmp_path: Path) -> None:
    plans.write_plan(tmp_path, "det", plans.pad32(), {"x": [1, 3, 64, 64]})
    plans.write_plan(tmp_path, "old", plans.pad32())

    async def scenario() -> None:
        app = InfernoApp(ServeConfig(repository=tmp_path))
        await app.startup()
        try:
            assert app.ready, "one model loaded: ready"
            assert app.manager.loaded() == {"det": ["1"]}
            index = {r["name"]: r for r in app.manager.index()}
            assert index["det"]["state"] == "READY"
            assert index["old"]["state"] == "UNAVAILABLE"
            assert "'x': [1, 3, 8, 8]" in index["old"]["reason"] and "ONNXRuntimeError" in index["old"]["reason"]
            with pytest.raises(ModelUnavailableError) as info:
                app.manager.get("old")
            # failed for good: not a 503 inviting retries of the same files
            assert info.value.http_status == 500 and index["old"]["reason"] in str(info.value)
            assert "retrying will not help" in str(info.value)
        finally:
            await app.shutdown()

    asyncio.run(scenario())


@pytest.mark.parametrize(("strict", "good", "ready"), [(False, True, True), (True, True, False), (False, False, False)],
                         ids=["one-loaded", "strict", "none-loaded"])
def test_readiness_after_a_failed_load(tmp_path: Path, strict: bool, good: bool, ready: bool) -> None:
    if good:
        plans.write_plan(tmp_path, "det", plans.pad32(), {"x": [1, 3, 64, 64]})
    plans.write_plan(tmp_path, "old", plans.pad32())

    async def scenario() -> bool:
        app = InfernoApp(ServeConfig(repository=tmp_path, strict_readiness=strict))
        await app.startup()
        try:
            return app.ready
        finally:
            await app.shutdown()

    assert asyncio.run(scenario()) is ready


def test_an_unloaded_model_is_unknown_not_failed(tmp_path: Path) -> None:
    plans.write_plan(tmp_path, "det", plans.pad32(), {"x": [1, 3, 64, 64]})

    async def scenario() -> None:
        manager = ModelManager(ServeConfig(repository=tmp_path), ServingMetrics())
        await manager.load("det")
        await manager.unload("det")
        with pytest.raises(UnknownModelError, match="not loaded"):
            manager.get("det")
        await manager.close()

    asyncio.run(scenario())
