import subprocess
import sys

import inferno.bench

from ..exports import export_problems, imports


def test_all_is_curated_and_resolves() -> None:
    """``__all__`` is exactly what the package imports, each name the very object imported."""
    origins = imports(inferno.bench)
    assert origins, "inferno.bench imports nothing: the derived check would check nothing"
    assert export_problems(inferno.bench.__all__, origins, inferno.bench) == []
    for name in inferno.bench.__all__:
        assert getattr(inferno.bench, name) is not None


def test_import_has_no_side_effects() -> None:
    code = (
        "import asyncio, logging, threading, inferno.bench\n"
        "assert not logging.getLogger().handlers, 'logging configured on import'\n"
        "assert threading.active_count() == 1, 'thread started on import'\n"
        "assert 'matplotlib' not in __import__('sys').modules, 'matplotlib imported eagerly'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
