import subprocess
import sys

import inferno.bench

EXPECTED = {"BenchConfig", "BenchReport", "LoadPoint", "run_bench"}


def test_all_is_curated_and_resolves() -> None:
    assert set(inferno.bench.__all__) == EXPECTED
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
