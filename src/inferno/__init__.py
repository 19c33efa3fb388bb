"""inferno: take a trained model, make it fast and dependable in production — measured.

Importing inferno has no side effects; the heavy parts load when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from inferno._version import __version__

_LAZY: dict[str, str] = {
    "accelerate": "inferno.tuning.accelerate",
    "Report": "inferno.tuning.report",
    "load_plan": "inferno.repository.plan",
    "Plan": "inferno.repository.plan",
    "PlanRunner": "inferno.repository.plan",
    "AccelerateConfig": "inferno.config",
    "Budget": "inferno.config",
    "InfernoError": "inferno.errors",
    "export_edge": "inferno.edge.bundle",
    "Cascade": "inferno.edge.cascade",
    "load_edge": "inferno.edge.cascade",
    "CloudClient": "inferno.edge.cloud",
    "run_profile": "inferno.edge.profiles",
    "distill": "inferno.students.distill",
    "prune": "inferno.students.prune",
}
"""The public API: each name → the module it is imported from when first used.

The one list to edit: ``__all__`` is derived from it, and ``tests/unit/test_public_api.py``
checks that the ``TYPE_CHECKING`` imports below (what type checkers see) name the same
objects from the same modules.
"""

__all__ = ["__version__", *sorted(_LAZY)]

if TYPE_CHECKING:
    from inferno.config import AccelerateConfig as AccelerateConfig
    from inferno.config import Budget as Budget
    from inferno.edge.bundle import export_edge as export_edge
    from inferno.edge.cascade import Cascade as Cascade
    from inferno.edge.cascade import load_edge as load_edge
    from inferno.edge.cloud import CloudClient as CloudClient
    from inferno.edge.profiles import run_profile as run_profile
    from inferno.errors import InfernoError as InfernoError
    from inferno.repository.plan import Plan as Plan
    from inferno.repository.plan import PlanRunner as PlanRunner
    from inferno.repository.plan import load_plan as load_plan
    from inferno.students.distill import distill as distill
    from inferno.students.prune import prune as prune
    from inferno.tuning.accelerate import accelerate as accelerate
    from inferno.tuning.report import Report as Report


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'inferno' has no attribute {name!r}")
