"""The protocol layer stands alone: its clients load no server, and their users neither."""

from __future__ import annotations

import subprocess
import sys

import pytest

import inferno.protocol

SERVER_MODULES = ("uvicorn", "starlette", "aiohttp", "inferno.serving", "inferno.bench")


def _loaded(module: str) -> list[str]:
    code = (f"import sys, {module}\n"
            f"print(' '.join(m for m in sys.modules if m.startswith({SERVER_MODULES!r})))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return result.stdout.split()


@pytest.mark.parametrize("module", ["inferno.edge.cloud", "inferno.protocol", "inferno.monitoring.view"])
def test_a_client_loads_no_server(module: str) -> None:
    assert _loaded(module) == []


def test_the_exported_names_are_the_package_s_public_ones() -> None:
    exported = set(inferno.protocol.__all__)
    assert len(exported) == len(inferno.protocol.__all__)
    for name in exported:
        assert getattr(inferno.protocol, name) is not None
    public = {n for n in vars(inferno.protocol) if not n.startswith("_") and n != "annotations"}
    submodules = {"address", "aio", "client", "codec", "datatypes", "metadata"}
    assert public - submodules == exported
