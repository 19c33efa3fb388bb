"""torch.compile across releases: 2.13 takes a per-module recompile limit, 2.11 (the GPU machines') does not."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")

from inferno.runtimes.torch_compile import _compile  # noqa: E402


class _OldTorch:
    """torch.compile without ``recompile_limit``: what torch 2.11 offers."""

    def __init__(self) -> None:
        self._dynamo = torch._dynamo
        self.calls: list[dict[str, Any]] = []

    def compile(self, module: Any, mode: str | None = None, dynamic: bool | None = None) -> Any:
        self.calls.append({"mode": mode, "dynamic": dynamic})
        return module


@pytest.fixture
def restore_limit() -> Any:
    before = torch._dynamo.config.recompile_limit
    yield
    torch._dynamo.config.recompile_limit = before


@pytest.mark.usefixtures("restore_limit")
def test_old_torch_gets_the_process_wide_limit_raised_never_lowered() -> None:
    old = _OldTorch()
    assert _compile(old, "module", "default", 500) == "module"
    assert old.calls == [{"mode": "default", "dynamic": False}]
    assert torch._dynamo.config.recompile_limit == 500
    _compile(old, "module", "default", 20)
    assert torch._dynamo.config.recompile_limit == 500


@pytest.mark.usefixtures("restore_limit")
def test_this_torch_takes_the_limit_per_module() -> None:
    before = torch._dynamo.config.recompile_limit
    compiled = _compile(torch, torch.nn.Linear(2, 2), "default", 500)
    assert callable(compiled)
    assert torch._dynamo.config.recompile_limit == before  # not raised for everyone
