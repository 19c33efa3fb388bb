"""PyTorch: TorchScript files, ``torch.export`` programs and ``nn.Module`` objects, exported to ONNX.

A module is traced (``torch.onnx.export``, opset 17) with a dynamic batch axis (and a dynamic
sequence axis on 2-D integer inputs: token ids) on example inputs: the first rows of
``--data``, else the module's ``example_inputs``, else those a program carries; the graph is
then run at another batch size to prove the axis is dynamic.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import logging
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from inferno.errors import MissingExtraError, ModelLoadError
from inferno.models import data
from inferno.models.loaders.base import (
    BATCH,
    EXAMPLE_ROWS,
    OPSET,
    SEQUENCE,
    LoadRequest,
    failure,
    finish,
    reason,
    require_trust,
    store,
)
from inferno.models.loaders.onnx import verify_batch
from inferno.models.model import Model

log = logging.getLogger(__name__)


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise MissingExtraError("torch", "torch", "loading a PyTorch model") from exc
    return torch


def load_torchscript(request: LoadRequest) -> Model:
    path = request.file()
    torch = _torch()
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # RuntimeError from the zip reader, or anything else
        raise ModelLoadError(
            f"model file '{request.ref}': expected TorchScript (torch.jit.save), got a file that "
            f"torch.jit.load cannot read ({reason(exc)}); a torch.save() checkpoint holds "
            f"weights or a pickle, not a graph: save with torch.jit.save or torch.export.save, "
            f"or name the module as 'package.module:attr'"
        ) from exc
    return from_torch_module(module, request, path.stem)


def load_exported(request: LoadRequest) -> Model:
    path = request.file()
    # torch.export.load can fall back to full unpickling for some archives.
    require_trust(request, "a torch.export archive, which torch may unpickle")
    torch = _torch()
    try:
        program = torch.export.load(str(path))
    except Exception as exc:  # zip, JSON and schema errors, each of its own type
        raise ModelLoadError(
            f"model file '{request.ref}': expected a torch.export program (torch.export.save), "
            f"got {failure(exc)}"
        ) from exc
    return from_torch_module(program_module(program), request, path.stem)


def program_module(program: Any) -> Any:
    """An ``nn.Module`` running a ``torch.export`` program, with its names and example inputs."""
    import torch  # the caller has loaded the program, so torch is there

    class ExportedModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.graph = program.module()
            self.forward_names = list(program.graph_signature.user_inputs)
            self.example_inputs = tuple((program.example_inputs or ((),))[0])

        def train(self, mode: bool = True) -> ExportedModule:
            self.training = mode  # the program's module refuses train()/eval(): do not recurse
            return self

        def forward(self, *args: Any) -> Any:
            return self.graph(*args)

    return ExportedModule()


def _forward_names(module: Any) -> list[str]:
    """Parameter names of ``forward`` (TorchScript keeps them in its schema)."""
    if isinstance(getattr(module, "forward_names", None), list):
        return list(module.forward_names)
    schema = getattr(getattr(module, "forward", None), "schema", None)
    if schema is not None:
        return [a.name for a in schema.arguments if a.name != "self"]
    try:
        parameters = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in parameters if p.kind in kinds]


def _example_inputs(module: Any, request: LoadRequest, names: list[str]) -> tuple[Any, ...]:
    """Tracing inputs: the first rows of ``--data``, else ``module.example_inputs``."""
    torch = _torch()
    if request.data is not None:
        arrays = data.read_arrays(request.data)
        # the leading parameters that the file provides, in order (later ones may have defaults)
        wanted = list(itertools.takewhile(arrays.__contains__, names)) if names else [
            n for n in arrays if n != data.LABELS]
        if not wanted:
            raise ModelLoadError(
                f"'{request.ref}': --data {request.data}: expected arrays named like forward()'s "
                f"parameters {names}, got {sorted(arrays)}"
            )
        rows = [np.ascontiguousarray(arrays[n][:EXAMPLE_ROWS]) for n in wanted]
        return tuple(torch.from_numpy(r.astype(np.float32) if r.dtype == np.float64 else r)
                     for r in rows)
    given = getattr(module, "example_inputs", None)
    given = (given,) if isinstance(given, torch.Tensor) else given
    if isinstance(given, (tuple, list)) and given and all(isinstance(t, torch.Tensor) for t in given):
        return tuple(given)
    raise ModelLoadError(
        f"'{request.ref}': exporting to ONNX needs example inputs: pass --data FILE.npz with one "
        f"array per forward() parameter ({', '.join(names) or 'in order'}), or set "
        f"`example_inputs` (a tuple of tensors) on the module"
    )


def _output_names(outputs: Any) -> list[str]:
    if isinstance(outputs, dict):
        return [str(k) for k in outputs]
    count = len(outputs) if isinstance(outputs, (tuple, list)) else 1
    return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]


def _dynamic_axes(names: list[str], examples: tuple[Any, ...],
                  outputs: list[str]) -> dict[str, dict[int, str]]:
    """Batch on every axis 0; sequence on axis 1 of 2-D integer inputs (token ids)."""
    axes: dict[str, dict[int, str]] = {name: {0: BATCH} for name in [*names, *outputs]}
    for name, example in zip(names, examples, strict=True):
        if example.ndim == 2 and str(example.dtype).startswith(("torch.int", "torch.uint")):
            axes[name][1] = SEQUENCE
    return axes


def from_torch_module(module: Any, request: LoadRequest, name: str) -> Model:
    """Trace ``module`` on example inputs, export it, and check it at another batch size."""
    torch = _torch()
    module.eval()
    names = _forward_names(module)
    examples = _example_inputs(module, request, names)
    if len(names) < len(examples):
        names = [f"input_{i}" for i in range(len(examples))]
    names = names[: len(examples)]
    outputs = _output_names(_forward(module, examples, names, request.ref))

    def build(folder: Path) -> None:
        with _quiet_export(request.ref):
            torch.onnx.export(
                module, examples, str(folder / "model.onnx"), input_names=names,
                output_names=outputs, dynamic_axes=_dynamic_axes(names, examples, outputs),
                opset_version=OPSET, dynamo=False,
            )

    path = store(build, request)
    grown = tuple(torch.cat([e, e[:1]]) for e in examples)  # one more row than traced
    try:
        verify_batch(path, {n: g.detach().cpu().numpy() for n, g in zip(names, grown, strict=True)})
    except ModelLoadError as exc:
        raise ModelLoadError(
            f"'{request.ref}': expected the exported graph to take any batch size, but {exc}: "
            f"the model hard-codes its batch size (e.g. x.view({len(examples[0])}, -1) or a "
            f"torch.export without dynamic_shapes); make it use x.shape[0]"
        ) from exc
    try:
        _forward(module, grown, names, request.ref)
        factory: Callable[[], Any] | None = lambda: module  # noqa: E731
    except ModelLoadError as exc:  # e.g. the guards of a program exported at a fixed batch
        log.warning("no PyTorch eager baseline: %s", exc)
        factory = None
    return finish(request, path, name, torch_factory=factory,
                   description=f"PyTorch {type(module).__name__} from {request.ref}")


def _forward(module: Any, examples: tuple[Any, ...], names: list[str], ref: str) -> Any:
    torch = _torch()
    try:
        with torch.no_grad():
            return module(*examples)
    except Exception as exc:  # the user's forward may raise anything
        shapes = [f"{n}: {e.dtype} {list(e.shape)}" for n, e in zip(names, examples, strict=True)]
        raise ModelLoadError(
            f"'{ref}': forward() failed on the example inputs {shapes}: {failure(exc)}"
        ) from exc


@contextlib.contextmanager
def _quiet_export(ref: str) -> Iterator[None]:
    """Silence the exporter's warnings; turn its failures into ModelLoadError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    except Exception as exc:  # the exporter raises many unrelated types
        raise ModelLoadError(f"'{ref}': exporting to ONNX failed: {failure(exc)}") from exc
