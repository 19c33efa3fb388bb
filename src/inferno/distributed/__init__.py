"""Served models on a Ray Serve cluster: ``inferno serve --ray`` (the ``[ray]`` extra).

Nothing here is imported unless asked for: everything else works without Ray installed.
"""

from inferno.distributed.options import RayOptions

__all__ = ["RayOptions"]
