"""The edge: compact bundles (``bundle``), constrained-device profiles (``profiles``) and the
edge↔cloud cascade logic (``cascade``, ``cloud``, ``sweep``).

Beside the lower layers (``tuning``, ``repository``, ``models``, ``runtimes``), the edge speaks
the wire through ``inferno.protocol`` only; it imports nothing from ``serving`` or ``bench``
(the layer contract in pyproject.toml checks it). ``inferno cascade --serve`` serves a
``Cascade`` through ``inferno serve``'s app: the CLI hands it to ``serving.cascade``.
"""
