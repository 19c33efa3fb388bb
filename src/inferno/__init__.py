"""inferno: take a trained model, make it fast and dependable in production — measured.

Importing inferno has no side effects; the heavy parts load when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from inferno._version import __version__

__all__ = [
    "AccelerateConfig",
    "Budget",
    "Cascade",
    "CloudClient",
    "InfernoError",
    "Plan",
    "PlanRunner",
    "Report",
    "__version__",
    "accelerate",
    "distill",
    "export_edge",
    "load_edge",
    "load_plan",
    "prune",
    "run_profile",
]

_LAZY = {
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

if TYPE_CHECKING:
    from inferno.config import AccelerateConfig, Budget
    from inferno.edge.bundle import export_edge
    from inferno.edge.cascade import Cascade, load_edge
    from inferno.edge.cloud import CloudClient
    from inferno.edge.profiles import run_profile
    from inferno.errors import InfernoError
    from inferno.repository.plan import Plan, PlanRunner, load_plan
    from inferno.students.distill import distill
    from inferno.students.prune import prune
    from inferno.tuning.accelerate import accelerate
    from inferno.tuning.report import Report


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'inferno' has no attribute {name!r}")
