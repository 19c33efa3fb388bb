"""Padding to a runtime's preferred sequence multiple must not change a text model's answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inferno.repository.plan import PlanRunner
from inferno.serving.pipelines import TextPipeline, Work, build_pipeline
from inferno.serving.protocol import RequestedOutput

pytestmark = pytest.mark.slow

SENTENCES = ["a cat", "the quick brown fox jumps over the lazy dog", "hello world, this is a test of padding"]


def _embed(pipeline: TextPipeline, multiple: int) -> np.ndarray:
    pipeline.sequence_multiple = multiple
    work = Work(len(SENTENCES), list(SENTENCES), (RequestedOutput(pipeline.outputs[0].name, False),))
    return pipeline.execute([work])[0][pipeline.outputs[0].name]


def test_padding_to_a_multiple_keeps_embeddings(model_repository: Path) -> None:
    pipeline = build_pipeline(PlanRunner(model_repository / "minilm" / "1", threads=1))
    assert isinstance(pipeline, TextPipeline)
    exact = _embed(pipeline, 1)
    padded = _embed(pipeline, 16)
    np.testing.assert_allclose(padded, exact, atol=1e-5)
    assert not np.allclose(exact[0], exact[1], atol=1e-3)  # distinct sentences stay distinct


def test_padding_never_exceeds_the_truncation_length(model_repository: Path) -> None:
    pipeline = build_pipeline(PlanRunner(model_repository / "minilm" / "1", threads=1))
    assert isinstance(pipeline, TextPipeline)
    long_text = " ".join(["word"] * 1000)  # truncated to max_length tokens
    pipeline.sequence_multiple = 48  # 128 (MiniLM's max_length) is not a multiple of 48
    lengths: list[int] = []
    run = pipeline.runner.runtime.run

    def recording(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        lengths.append(feeds["input_ids"].shape[1])
        return run(feeds)

    pipeline.runner.runtime.run = recording  # type: ignore[method-assign]
    work = Work(1, [long_text], (RequestedOutput(pipeline.outputs[0].name, False),))
    out = pipeline.execute([work])[0][pipeline.outputs[0].name]
    assert lengths == [pipeline.max_length]
    assert out.shape == (1, 384) and np.isfinite(out).all()
