"""Read a package's exports from its source, so the ``__all__`` tests derive them, never copy them.

``imports(module)`` parses the module's file and returns what its ``from M import name``
statements bind: at the top level, or only those under ``if TYPE_CHECKING:``.
``export_problems`` compares the names a package exports with where it says they come from
and returns one line per disagreement (an empty list when there is none).
"""

from __future__ import annotations

import ast
import importlib
import inspect
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType


def _type_checking_body(tree: ast.Module) -> list[ast.stmt]:
    """The statements under each top-level ``if TYPE_CHECKING:``."""
    blocks = [n for n in tree.body if isinstance(n, ast.If)
              and ast.unparse(n.test) in {"TYPE_CHECKING", "typing.TYPE_CHECKING"}]
    return [statement for block in blocks for statement in block.body]


def source_imports(source: str, *, type_checking: bool = False) -> dict[str, str]:
    """Public name → module of each ``from module import name [as name]`` in ``source``.

    ``type_checking``: only the imports under ``if TYPE_CHECKING:``; else only the top-level
    ones. ``from __future__`` and relative imports are skipped. An alias that renames
    (``import a as b``) is kept under the name it binds, mapped to ``module:a``, so that a
    comparison with the package's own table shows the renaming.
    """
    tree = ast.parse(source)
    statements = _type_checking_body(tree) if type_checking else tree.body
    found: dict[str, str] = {}
    for node in statements:
        if not isinstance(node, ast.ImportFrom) or node.level or node.module == "__future__":
            continue
        for alias in node.names:
            bound = alias.asname or alias.name
            if not bound.startswith("_"):
                found[bound] = node.module if bound == alias.name else f"{node.module}:{alias.name}"
    return found


def imports(module: ModuleType, *, type_checking: bool = False) -> dict[str, str]:
    """``source_imports`` of a loaded module's own file."""
    return source_imports(Path(inspect.getfile(module)).read_text(), type_checking=type_checking)


def export_problems(exported: Iterable[str], origins: Mapping[str, str],
                    package: ModuleType | None = None) -> list[str]:
    """Disagreements between the names a package exports and ``origins`` (name → module).

    Every exported name must have an origin and every origin must be exported, each at most
    once; the module must exist and define the name; and, given ``package``, the package's
    attribute must be that very object.
    """
    exported = list(exported)
    problems = [f"{name!r} is exported twice" for name in sorted(set(exported))
                if exported.count(name) > 1]
    problems += [f"{name!r} is exported but imported from nowhere"
                 for name in sorted(set(exported) - set(origins))]
    problems += [f"{name!r} (from {origins[name]}) is not exported"
                 for name in sorted(set(origins) - set(exported))]
    for name in sorted(set(exported) & set(origins)):
        try:
            obj = getattr(importlib.import_module(origins[name]), name)
        except (ImportError, AttributeError) as exc:
            problems.append(f"{name!r} does not resolve from {origins[name]}: {exc}")
            continue
        if package is not None and getattr(package, name, None) is not obj:
            problems.append(f"{package.__name__}.{name} is not {origins[name]}.{name}")
    return problems
