"""The ``inferno`` command: thin commands over the packages. ``python -m inferno`` is the same.

Each module registers its commands on the one Typer ``app`` when imported here.
"""

from inferno.cli import (
    cascade,  # noqa: F401
    commands,  # noqa: F401  (registers the commands)
    compress,  # noqa: F401
    export,  # noqa: F401
    serve,  # noqa: F401
)
from inferno.cli._app import app, main

__all__ = ["app", "main"]
