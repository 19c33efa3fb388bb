"""``inferno.__all__``: derived from ``_LAZY``, and the ``TYPE_CHECKING`` imports agree with it."""

import subprocess
import sys

import inferno

from .exports import export_problems, imports, source_imports


def test_all_is_curated_and_resolves() -> None:
    assert inferno.__all__ == ["__version__", *sorted(inferno._LAZY)]
    assert export_problems(inferno.__all__, {**inferno._LAZY, "__version__": "inferno._version"},
                           inferno) == []
    for name in inferno.__all__:
        assert getattr(inferno, name) is not None


def test_type_checking_imports_name_what_the_lazy_table_loads() -> None:
    assert imports(inferno, type_checking=True) == inferno._LAZY


def test_every_export_is_defined_where_the_table_says() -> None:
    """Each name comes from its home module (where it is defined), not through a re-export."""
    for name, module in inferno._LAZY.items():
        assert getattr(inferno, name).__module__ == module, name


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        inferno.nonexistent  # noqa: B018
    except AttributeError as exc:
        assert "has no attribute 'nonexistent'" in str(exc)
    else:
        raise AssertionError("inferno.nonexistent resolved")


def test_the_checks_catch_drift() -> None:
    """The derived checks can fail: a missing or renamed TYPE_CHECKING import, a stray or
    unresolvable name."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from inferno.config import Budget\n"
        "    from inferno.errors import InfernoError as Error\n"
    )
    lazy = {"Budget": "inferno.config", "InfernoError": "inferno.errors"}
    seen = source_imports(source, type_checking=True)
    assert seen == {"Budget": "inferno.config", "Error": "inferno.errors:InfernoError"}
    assert seen != lazy
    assert source_imports(source) == {"TYPE_CHECKING": "typing"}  # top level only
    assert export_problems(["Budget", "Budget", "Missing", "NoSuchThing"],
                           {"Budget": "inferno.config", "NoSuchThing": "inferno.errors",
                            "Unlisted": "inferno.config"}) == [
        "'Budget' is exported twice",
        "'Missing' is exported but imported from nowhere",
        "'Unlisted' (from inferno.config) is not exported",
        "'NoSuchThing' does not resolve from inferno.errors: "
        "module 'inferno.errors' has no attribute 'NoSuchThing'",
    ]


def test_import_has_no_side_effects() -> None:
    code = (
        "import logging, sys, threading, inferno\n"
        "assert not logging.getLogger().handlers, 'logging configured on import'\n"
        "assert threading.active_count() == 1, 'thread started on import'\n"
        "heavy = [m for m in ('torch', 'onnxruntime', 'openvino') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
