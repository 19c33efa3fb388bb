"""The edge: compact bundles (``bundle``), constrained-device profiles (``profiles``) and the
edge↔cloud cascade (``cascade``, ``cloud``, ``sweep``, ``cascade_server``).

Beside the lower layers (``tuning``, ``models``, ``runtimes``), the cascade reuses what the
serving side already has for the wire: the v2 protocol's tensor codec (``serving.protocol``),
the ASGI types and socket binding of ``serving``, and ``bench``'s URL check. Nothing here is
imported by ``serving`` or ``bench``.
"""
