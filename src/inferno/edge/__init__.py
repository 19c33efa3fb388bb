"""The edge: compact bundles (``bundle``), constrained-device profiles (``profiles``) and the
edge↔cloud cascade (``cascade``). Imports ``tuning``, ``models`` and ``runtimes``, never
``serving`` internals beyond its public client-facing protocol."""
