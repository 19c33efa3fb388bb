"""A real repository (digits and minilm, built once per session) for the serving end-to-end tests.

Servers run in a thread (``ServerThread``) on a free port; tests talk to them through the
real ``tritonclient.http`` and, for what that client cannot send, through raw HTTP
(helpers in ``support``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

import inferno


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """digits and minilm, fp32 on ONNX Runtime, version 1 each. Read-only: copy it to change it."""
    repo = tmp_path_factory.mktemp("serving") / "model_repository"
    # device="cpu": the assertions (batch limits, providers) are those of a CPU plan, on any machine.
    common: dict[str, Any] = {"variants": ("fp32",), "runtimes": ("onnxruntime",), "repeats": 3, "device": "cpu"}
    inferno.accelerate("digits", repository=repo, **common)
    inferno.accelerate("minilm", repository=repo, max_eval_samples=16, **common)
    return repo


@pytest.fixture
def digits_only_copy(model_repository: Path, tmp_path: Path) -> Path:
    """A writable repository holding only digits (version 1)."""
    repo = tmp_path / "model_repository"
    shutil.copytree(model_repository / "digits", repo / "digits")
    return repo
