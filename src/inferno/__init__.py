"""inferno: take a trained model, make it fast and dependable in production — measured.

Importing inferno has no side effects; the heavy parts load when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "AccelerateConfig",
    "Budget",
    "InfernoError",
    "Plan",
    "PlanRunner",
    "Report",
    "__version__",
    "accelerate",
    "load_plan",
]

_LAZY = {
    "accelerate": "inferno.tuning.accelerate",
    "Report": "inferno.tuning.report",
    "load_plan": "inferno.plan",
    "Plan": "inferno.plan",
    "PlanRunner": "inferno.plan",
    "AccelerateConfig": "inferno.config",
    "Budget": "inferno.config",
    "InfernoError": "inferno.errors",
}

if TYPE_CHECKING:
    from inferno.config import AccelerateConfig, Budget
    from inferno.errors import InfernoError
    from inferno.plan import Plan, PlanRunner, load_plan
    from inferno.tuning.accelerate import accelerate
    from inferno.tuning.report import Report


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'inferno' has no attribute {name!r}")
