"""OpenVINO streams split a batch on axis 0 only when the model's tensors have their rows there."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inferno.config import AccelerateConfig
from inferno.models.loaders import load_model
from inferno.runtimes import RUNTIMES, RuntimeSettings
from inferno.tuning.recipes import RECIPES
from inferno.tuning.variants import Variant, artifact_for
from tests.unit.models.test_shapes import _stateful

pytestmark = pytest.mark.skipif(not RUNTIMES["openvino-streams"].available(), reason="openvino not installed")


def test_a_state_batched_on_axis_1_is_not_split_on_axis_0(tmp_path: Path) -> None:
    model = load_model(str(_stateful(tmp_path / "vad.onnx")))
    variant = Variant("fp32", model.onnx_path, RECIPES["fp32"], (), ort_only=False)
    artifact = artifact_for(model, variant, AccelerateConfig(threads=2))
    assert artifact.options.batch_first is False  # the loader's verified axes reach the runtime
    feeds = model.preprocessor.encode(model.eval_data.take(4).samples)
    runtime = RUNTIMES["openvino-streams"](RuntimeSettings(threads=2))
    runtime.load(artifact)
    try:
        out, state_n = runtime.run(feeds)
    finally:
        runtime.close()
    assert out.shape == (4, 1) and state_n.shape == (2, 4, 4)
    np.testing.assert_allclose(state_n, feeds["state"] + 1, rtol=1e-6)
