"""Tiny graphs of the model kinds met in the wild, and plan folders written for them by hand.

- ``pad32``: a detector-like graph (``x [N, 3, H, W]``) that runs only where H and W are
  multiples of 32: five MaxPool(2) halve it, a Resize ×32 brings it back and a skip
  connection adds the input (8×8 pools down to nothing and fails, as the real one does).
- ``stateful``: a voice-activity-detector-like graph: ``input [batch, sequence]``, ``state
  [2, batch, 4]`` and a scalar int64 ``sr`` in; ``output [batch, 1]`` and ``stateN [2, batch,
  4]`` out. It takes only sequence 512 at sr 16000 (a Reshape to [-1, 512 × sr // 16000]),
  and each row's output depends on its own state.

A plan folder is what ``inferno accelerate`` writes (``model.onnx`` + ``plan.json``, and a
``profile.json`` when asked), made here without measuring anything.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from inferno import repository
from inferno.models.model import tensor_preprocessor
from inferno.models.signature import Signature
from inferno.monitoring.profile import build_profile
from inferno.repository.plan import Plan

SEQUENCE = 512
SAMPLE_RATE = 16000
STATE = 4


def _model(graph: onnx.GraphProto, opset: int = 17) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def relu() -> onnx.ModelProto:
    """The smallest servable graph: y = Relu(x), x and y [batch, 2]."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
    )
    return _model(graph)


def pad32() -> onnx.ModelProto:
    nodes = []
    last = "x"
    for i in range(5):
        nodes.append(helper.make_node("MaxPool", [last], [f"p{i}"], kernel_shape=[2, 2], strides=[2, 2]))
        last = f"p{i}"
    nodes += [
        helper.make_node("Resize", [last, "", "scales"], ["up"], mode="nearest"),
        helper.make_node("Add", ["x", "up"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "pad32",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [numpy_helper.from_array(np.array([1, 1, 32, 32], np.float32), "scales")],
    )
    return _model(graph)


def stateful() -> onnx.ModelProto:
    consts = {
        "minus1": np.array([-1], np.int64), "width": np.array([SEQUENCE], np.int64),
        "rate": np.array(SAMPLE_RATE, np.int64), "half": np.array(0.5, np.float32),
        "axes1": np.array([1], np.int64), "axes0": np.array([0], np.int64), "axes02": np.array([0, 2], np.int64),
    }
    nodes = [
        # [-1, 512 * (sr // 16000)]: sr 0 makes [-1, 0], which no input reshapes to
        helper.make_node("Div", ["sr", "rate"], ["k"]),
        helper.make_node("Mul", ["width", "k"], ["cols"]),
        helper.make_node("Concat", ["minus1", "cols"], ["shape"], axis=0),
        helper.make_node("Reshape", ["input", "shape"], ["frames"], allowzero=1),
        helper.make_node("ReduceMean", ["frames", "axes1"], ["mean"], keepdims=1),  # [batch, 1]
        helper.make_node("ReduceSum", ["state", "axes02"], ["carried"], keepdims=0),  # [batch]
        helper.make_node("Unsqueeze", ["carried", "axes1"], ["carried2"]),  # [batch, 1]
        helper.make_node("Add", ["mean", "carried2"], ["output"]),
        helper.make_node("Mul", ["state", "half"], ["kept"]),
        helper.make_node("Unsqueeze", ["output", "axes0"], ["fresh"]),  # [1, batch, 1]
        helper.make_node("Add", ["kept", "fresh"], ["stateN"]),
    ]
    graph = helper.make_graph(
        nodes, "stateful",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", "sequence"]),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", STATE]),
         helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1]),
         helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, "batch", STATE])],
        [numpy_helper.from_array(v, k) for k, v in consts.items()],
    )
    return _model(graph, opset=18)  # ReduceMean takes its axes as an input from 18


def stateful_feeds(rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    """One call's inputs in graph layout."""
    rng = np.random.default_rng(seed)
    return {"input": rng.standard_normal((rows, SEQUENCE)).astype(np.float32),
            "state": rng.standard_normal((2, rows, STATE)).astype(np.float32),
            "sr": np.array(SAMPLE_RATE, np.int64)}


def stateful_samples(rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The same inputs as evaluation samples hold them: rows first, ``sr`` once per row."""
    feeds = stateful_feeds(rows, seed)
    return {"input": feeds["input"], "state": np.moveaxis(feeds["state"], 1, 0),
            "sr": np.full(rows, SAMPLE_RATE, np.int64)}


def write_plan(repo: Path, name: str, model: onnx.ModelProto, shapes: dict[str, list[int]] | None = None,
               profile: dict[str, np.ndarray] | None = None) -> Path:
    """A new version of ``name`` serving ``model`` on ONNX Runtime (CPU, fp32), as accelerate
    would write it; ``shapes`` is ``Plan.shapes`` (None: a plan made before shapes were
    recorded); ``profile``: samples (rows first) to write a reference profile of."""
    signature = Signature.from_onnx(model)

    def fill(staging: Path, final: Path) -> None:
        onnx.save(model, staging / repository.MODEL_FILE)
        plan = Plan(
            name=name, variant="fp32", passes=(), runtime="onnxruntime", provider="CPUExecutionProvider",
            threads=1, graph_precision="fp32", compute_precision="fp32", hints={}, task="other",
            signature=signature.to_dict(), preprocessor=tensor_preprocessor(signature).to_dict(),
            metrics={}, within_budget=True, budget={}, objective="latency", batch_size=1,
            throughput_per_s=0.0, latency_ms_p50=0.0, source=f"tests:{name}", model_sha256="",
            inferno_version="test", created="2026-01-01T00:00:00+00:00", shapes=dict(shapes or {}),
        )
        (staging / repository.PLAN_FILE).write_text(plan.to_json())
        if profile is not None:
            outputs = reference(model, tensor_preprocessor(signature).encode(profile))
            primary = signature.outputs[signature.primary_output()].name
            build_profile("other", profile, outputs[primary], primary, source="tests").save(staging)

    return repository.write_version(repo, name, fill)


def reference(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Plain ONNX Runtime's outputs for ``feeds``, by name."""
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))
