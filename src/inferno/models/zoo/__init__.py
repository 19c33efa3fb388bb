"""Bundled models, built on first use and cached (see ``cache``)."""

from __future__ import annotations

import importlib

from inferno.errors import UnknownModelError
from inferno.models.model import Model

BUNDLED: dict[str, str] = {
    "minilm": "inferno.models.zoo.minilm",
    "digits": "inferno.models.zoo.digits",
}
"""Bundled name → module with a ``load() -> Model`` function (imported on use)."""

DEFAULT = "minilm"


def load_bundled(name: str) -> Model:
    """Build (or take from the cache) and return a bundled model.

    Raises:
        UnknownModelError: naming the bundled models that exist.
    """
    if name not in BUNDLED:
        raise UnknownModelError(
            f"unknown bundled model {name!r}; expected one of {', '.join(sorted(BUNDLED))}"
        )
    module = importlib.import_module(BUNDLED[name])
    model: Model = module.load()
    return model
