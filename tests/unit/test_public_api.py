import subprocess
import sys

import inferno

EXPECTED = {
    "AccelerateConfig", "Budget", "InfernoError", "Plan", "PlanRunner", "Report",
    "__version__", "accelerate", "load_plan",
    # the edge: bundles, students, profiles, the cascade
    "Cascade", "CloudClient", "distill", "export_edge", "load_edge", "prune", "run_profile",
}


def test_all_is_curated_and_resolves() -> None:
    assert set(inferno.__all__) == EXPECTED
    for name in inferno.__all__:
        assert getattr(inferno, name) is not None


def test_import_has_no_side_effects() -> None:
    code = (
        "import logging, sys, threading, inferno\n"
        "assert not logging.getLogger().handlers, 'logging configured on import'\n"
        "assert threading.active_count() == 1, 'thread started on import'\n"
        "heavy = [m for m in ('torch', 'onnxruntime', 'openvino') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
