"""Fixtures for the pass tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from .graphs import tiny_bert


@pytest.fixture(scope="session")
def tiny_bert_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random-weight BERT exported once per session (needs torch and transformers)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return tiny_bert(tmp_path_factory.mktemp("bert") / "bert.onnx")
