"""The version, in a module of its own so that no part of inferno imports the package root."""

__version__ = "0.1.0"
