"""Python objects: ``package.module:attr`` references and pickles (read only with ``--trust``).

The object is dispatched by what it is: a ``torch.nn.Module`` or ``torch.export`` program
(``loaders.torch``), a scikit-learn estimator, i.e. anything with ``predict``
(``loaders.sklearn``), or a callable returning one.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterator
from typing import Any

from inferno.errors import MissingExtraError, ModelLoadError
from inferno.models.loaders.base import LoadRequest, failure, require_trust
from inferno.models.loaders.sklearn import from_estimator
from inferno.models.loaders.torch import from_torch_module, program_module
from inferno.models.model import Model


@contextlib.contextmanager
def _cwd_importable() -> Iterator[None]:
    """The working directory on ``sys.path`` for a while, as uvicorn does for ``module:app``."""
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    sys.path[:0] = [cwd] if added else []
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def load_reference(request: LoadRequest) -> Model:
    module_name, _, attr = request.ref.partition(":")
    try:
        with _cwd_importable():
            obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # the user's module may raise anything while it is imported
        raise ModelLoadError(f"'{request.ref}': cannot import module {module_name!r}: "
                             f"{failure(exc)}") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelLoadError(f"'{request.ref}': module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return from_object(obj, request, attr.rsplit(".", 1)[-1])


def from_object(obj: Any, request: LoadRequest, name: str, *, call: bool = True) -> Model:
    """Dispatch a Python object: torch module, exported program, estimator, or a factory."""
    torch = sys.modules.get("torch")  # such objects exist only once torch has been imported
    if torch is not None and isinstance(obj, torch.nn.Module):
        return from_torch_module(obj, request, name)
    if torch is not None and isinstance(obj, torch.export.ExportedProgram):
        return from_torch_module(program_module(obj), request, name)
    if not isinstance(obj, type) and callable(getattr(obj, "predict", None)):
        return from_estimator(obj, request, name)
    if call and callable(obj):
        try:
            made = obj()
        except Exception as exc:  # the user's factory may raise anything
            raise ModelLoadError(
                f"'{request.ref}': calling it to build the model failed: {failure(exc)}"
            ) from exc
        return from_object(made, request, name, call=False)
    raise ModelLoadError(
        f"'{request.ref}': expected a torch.nn.Module, a scikit-learn estimator (with predict) "
        f"or a callable returning one, got {type(obj).__module__}.{type(obj).__qualname__}"
    )


def load_pickle(request: LoadRequest) -> Model:
    path = request.file()
    require_trust(request, "a pickle")
    try:
        import joblib  # sklearn's own dependency; it reads joblib dumps and plain pickles alike
    except ImportError as exc:
        raise MissingExtraError("joblib", "torch", "reading a pickled model") from exc
    try:
        with _cwd_importable():
            obj = joblib.load(path)
    except Exception as exc:  # unpickling raises whatever the pickled code raises
        raise ModelLoadError(
            f"model file '{request.ref}' cannot be unpickled: {failure(exc)} "
            f"(the classes it refers to must be importable)"
        ) from exc
    return from_object(obj, request, path.stem, call=False)
