"""Shared fixtures. Bundled models build into one cache per test session, not the user's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Reuse a build cache across runs when the developer points at one; fresh otherwise.
    if "INFERNO_TEST_CACHE_DIR" in os.environ:
        os.environ["INFERNO_CACHE_DIR"] = os.environ["INFERNO_TEST_CACHE_DIR"]
    else:
        os.environ["INFERNO_CACHE_DIR"] = str(tmp_path_factory.mktemp("inferno-cache"))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return tmp_path / "model_repository"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from inferno.hardware import detect

    if detect().has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("gpu") is not None:  # not `in keywords`: that matches parametrize ids
            item.add_marker(skip)
