"""Turn what a user names as MODEL into a ``Model``: an FP32 ONNX graph with a dynamic batch axis.

``load_model`` tries a bundled name (``zoo.BUNDLED``), then a student folder (``student``),
then a file by suffix
(``SUFFIX_LOADERS``: ``.onnx`` is used in place; TorchScript and ``torch.export`` files are
exported; pickles are read only with ``trust``), then ``package.module:attr`` naming a
``torch.nn.Module``, a ``torch.export`` program, a scikit-learn estimator (anything with
``predict``) or a callable returning one.

PyTorch models are traced (``torch.onnx.export``, opset 17) with a dynamic batch axis (and a
dynamic sequence axis on 2-D integer inputs: token ids) on example inputs: the first rows of
``--data``, else the module's ``example_inputs`` (a tuple of tensors), else those a program
carries; the graph is then run at another batch size to prove the axis is dynamic.
scikit-learn models go through skl2onnx; classifiers output ``probabilities`` (first) and
``label``. Generated graphs go to ``workdir``, else ``cache_dir()/imported/<graph hash>/``.

Evaluation data is ``--data`` (checked against the signature) or synthesized from it. Task,
unless given: scikit-learn says itself; otherwise a 2-D float first output ``[batch, C]`` with
a fixed ``C > 1`` means classification, anything else ``other``.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import itertools
import logging
import os
import re
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from inferno.config import cache_dir
from inferno.errors import (
    MissingExtraError,
    ModelLoadError,
    UnknownModelError,
    UntrustedPickleError,
    UserInputError,
)
from inferno.models import data, shapes
from inferno.models.model import Model, tensor_preprocessor
from inferno.models.shapes import parse_shapes
from inferno.models.signature import Signature, Task
from inferno.models.student import INFO_FILE as STUDENT_INFO
from inferno.models.student import is_student_folder, load_student
from inferno.models.zoo import BUNDLED, load_bundled
from inferno.models.zoo.cache import content_key

log = logging.getLogger(__name__)

OPSET = 17
BATCH = "batch"
SEQUENCE = "sequence"
EXAMPLE_ROWS = 2
"""Rows of ``--data`` used to trace a PyTorch model (two, so that no size-1 axis is baked in)."""


@dataclass(frozen=True)
class LoadRequest:
    """The arguments of ``load_model``, handed to each loader."""

    ref: str
    trust: bool = False
    data: Path | None = None
    task: Task | None = None
    name: str | None = None
    workdir: Path | None = None
    shapes: tuple[str, ...] = ()
    """``--shape NAME:DIMS`` items (see ``models.shapes``)."""

    def file(self) -> Path:
        """The referenced file; ModelLoadError when it does not exist."""
        path = Path(self.ref).expanduser()
        if not path.exists():
            raise ModelLoadError(f"model file '{self.ref}' does not exist")
        if path.is_dir():
            raise ModelLoadError(f"model file '{self.ref}': expected a file, got a directory")
        return path


Loader = Callable[[LoadRequest], Model]


def load_model(ref: str, *, trust: bool = False, data: Path | None = None,
               task: Task | None = None, name: str | None = None,
               workdir: Path | None = None, shapes: Sequence[str] = ()) -> Model:
    """Load MODEL as named on the command line (see the module docstring for what it may be).

    Args:
        ref: a bundled name, a file path, or ``package.module:attr``.
        trust: allow unpickling (pickles run arbitrary code: only for files you made).
        data: an ``.npz`` of evaluation inputs and optional ``labels``; replaces the bundled
            data or the synthesized inputs, and gives a PyTorch model its tracing inputs.
        task: overrides the detected task.
        name: overrides the model name (default: bundled name, file stem or attribute).
        workdir: where generated graphs go (default: the cache's ``imported/`` folder).
        shapes: ``NAME:DIMS`` items fixing an ONNX graph's dynamic axes for measurement
            (``x:1,3,320,320``); without them (and without ``data``) sizes the graph accepts
            are searched for (``models.shapes``).

    Raises:
        ModelLoadError: missing, corrupt, unsupported or not importable (its subclasses
            ``UnknownModelError`` and ``UntrustedPickleError`` included).
        DataMismatchError: ``data`` does not fit the model's inputs, or no size tried for
            a dynamic axis ran (``ShapeSearchError``).
        UserInputError: ``data`` is not a readable ``.npz``.
        MissingExtraError: torch or scikit-learn/skl2onnx is needed but not installed.
    """
    return loader_for(ref)(LoadRequest(ref, trust, data, task, name, workdir, tuple(shapes)))


def loader_for(ref: str) -> Loader:
    """The loader for ``ref``: bundled name, student folder, file suffix, then ``module:attr``."""
    if ref in BUNDLED:
        return _load_bundled
    path = Path(ref).expanduser()
    if is_student_folder(path) or (path.is_dir() and path.suffix.lower() not in SUFFIX_LOADERS):
        return _load_student_folder
    loader = SUFFIX_LOADERS.get(path.suffix.lower())
    if loader is not None:
        return loader
    if _REFERENCE.fullmatch(ref):
        return _load_reference
    if re.fullmatch(r"[A-Za-z][\w-]*", ref) and not Path(ref).exists():
        raise UnknownModelError(
            f"unknown bundled model '{ref}': expected one of {', '.join(sorted(BUNDLED))}, "
            f"a model file, or 'package.module:attr'"
        )
    raise ModelLoadError(
        f"unsupported model '{ref}': expected an .onnx file, a TorchScript/torch.export file, "
        f"a pickle (with --trust), 'package.module:attr', or a bundled name "
        f"({', '.join(sorted(BUNDLED))})"
    )


_REFERENCE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


def infer_task(signature: Signature) -> Task:
    """A 2-D float first output ``[batch, C]`` with a fixed ``C > 1`` → CLASSIFICATION, else OTHER."""
    first = signature.outputs[0] if signature.outputs else None
    if first is None or not first.dtype.startswith(("float", "bfloat")) or len(first.shape) != 2:
        return Task.OTHER
    classes = first.shape[1]
    return Task.CLASSIFICATION if isinstance(classes, int) and classes > 1 else Task.OTHER


def _finish(request: LoadRequest, onnx_path: Path, name: str, *, task: Task | None = None,
            torch_factory: Callable[[], Any] | None = None, description: str = "",
            probe: bool = False) -> Model:
    """The Model around a graph on disk: signature, task, evaluation data and input sizes.

    ``probe``: the graph is the user's own (not one inferno exported), so its batch axes and
    the sizes of its dynamic axes are found by running it (``models.shapes``).
    """
    signature = Signature.from_onnx(_read_onnx(onnx_path, request.ref))
    given = parse_shapes(request.shapes)
    found: shapes.Found | None = None
    if probe or given:
        if request.data is not None:  # the data's sizes are the ones to check the graph at
            given = {**_data_dims(request.data, signature), **given}
        found = _search_shapes(onnx_path, signature, given, request.ref)
        signature = found.signature
    if request.data is not None:
        eval_data = data.load_npz(request.data, signature)
        source = "--data"
    else:
        eval_data = data.synthesize(signature, shapes=found.shapes if found else None)
        source = found.source if found else "synthesized"
    rows = eval_data.samples if isinstance(eval_data.samples, dict) else {}  # tensors: always
    return Model(
        name=request.name or name, onnx_path=onnx_path, signature=signature,
        task=request.task or task or infer_task(signature), eval_data=eval_data,
        preprocessor=tensor_preprocessor(signature), torch_factory=torch_factory,
        source=request.ref, description=description,
        shapes=data.call_shapes(signature, rows), shapes_source=source,
    )


def _data_dims(path: Path, signature: Signature) -> dict[str, tuple[int | None, ...]]:
    """The sizes ``--data`` holds, as ``--shape`` would give them (the batch axis left open)."""
    arrays = data.read_arrays(path)
    dims: dict[str, tuple[int | None, ...]] = {}
    for spec in signature.inputs:
        array = arrays.get(spec.name)
        if array is not None and array.ndim == len(spec.shape):
            dims[spec.name] = tuple(  # fixed dims are load_npz's to check, with its message
                None if i == spec.batch_axis or isinstance(declared, int) else int(d)
                for i, (declared, d) in enumerate(zip(spec.shape, array.shape, strict=True)))
    return dims


def _search_shapes(onnx_path: Path, signature: Signature,
                   given: dict[str, tuple[int | None, ...]], ref: str) -> shapes.Found:
    """Run ``models.shapes.search`` on an ONNX Runtime CPU session of the graph."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # a size that does not fit is expected here, not news
    try:
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ModelLoadError(f"model '{ref}': ONNX Runtime cannot load it: {_reason(exc)}") from exc
    return shapes.search(session, signature, given, data.synthetic_feeds_at)


def _reason(exc: BaseException) -> str:
    """The first line of an exception's message, cut at 200 characters (third-party ones run long)."""
    lines = str(exc).strip().splitlines()
    line = lines[0].strip() if lines else type(exc).__name__
    return line if len(line) <= 200 else line[:197] + "..."


def _failure(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {_reason(exc)}"


# --- bundled ---------------------------------------------------------------------------


def _load_bundled(request: LoadRequest) -> Model:
    model = load_bundled(request.ref)
    if request.data is not None:
        if model.is_text:
            raise UserInputError(f"--data {request.data}: the bundled model '{request.ref}' takes "
                                 f"text and brings its own sentences; expected no --data")
        model = replace(model, eval_data=data.load_npz(request.data, model.signature))
    return replace(model, name=request.name or model.name, task=request.task or model.task)


def _load_student_folder(request: LoadRequest) -> Model:
    """A folder written by ``inferno distill`` / ``inferno prune`` (see ``models.student``)."""
    folder = Path(request.ref).expanduser()
    if not is_student_folder(folder):
        raise ModelLoadError(f"model '{request.ref}' is a folder: expected a student folder (with "
                             f"{STUDENT_INFO}, written by inferno distill or prune), found none")
    model = load_student(folder, name=request.name)
    if request.data is not None and not model.is_text:
        model = replace(model, eval_data=data.load_npz(request.data, model.signature))
    return replace(model, task=request.task or model.task)


# --- ONNX files and graphs -------------------------------------------------------------


def _load_onnx(request: LoadRequest) -> Model:
    """Use the file in place, unless its batch axis is fixed: then store a dynamic copy."""
    path = request.file()
    graph = _read_onnx(path, request.ref, check=True)
    if _fixed_batch(graph):
        external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.graph.initializer)
        dynamic = _make_batch_dynamic(onnx.load(str(path)), request.ref)  # weights and all
        if dynamic is not None:
            path = _store(lambda folder: onnx.save(
                dynamic, str(folder / "model.onnx"), save_as_external_data=external), request)
    return _finish(request, path, Path(request.ref).stem, probe=True)


def _read_onnx(path: Path, ref: str, *, check: bool = False) -> onnx.ModelProto:
    """The graph (without external weights); with ``check``, also run the ONNX checker."""
    try:
        graph = onnx.load(str(path), load_external_data=False)
        if check:
            onnx.checker.check_model(str(path))  # by path: works past 2 GB and external data
    except DecodeError as exc:
        raise ModelLoadError(f"model file '{ref}': expected an ONNX model, got bytes that do not "
                             f"parse as one ({_reason(exc)})") from exc
    except onnx.checker.ValidationError as exc:
        raise ModelLoadError(f"model file '{ref}' is not a valid ONNX model: {_reason(exc)}") from exc
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"model file '{ref}' cannot be read: {_reason(exc)}") from exc
    return graph


def _leading_dims(graph: onnx.ModelProto) -> Iterator[tuple[str, Any]]:
    """(name, first dim) of every graph input (not initializers) and output of rank >= 1."""
    initializers = {i.name for i in graph.graph.initializer}
    for value in [*graph.graph.input, *graph.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if value.name not in initializers and len(dims) > 0:
            yield value.name, dims[0]


def _fixed_batch(graph: onnx.ModelProto) -> dict[str, int]:
    """The leading sizes when every input's leading axis is fixed at one same size (a model
    exported at batch N); empty otherwise: a dynamic axis anywhere in front (``-1`` and
    unnamed axes included), or leading sizes that differ (``input [1, 576]`` beside ``state
    [2, 1, 128]``: axis 0 is not a batch axis there)."""
    initializers = {i.name for i in graph.graph.initializer}
    inputs = [v for v in graph.graph.input if v.name not in initializers]
    leading = {}
    for value in inputs:
        dims = value.type.tensor_type.shape.dim
        if len(dims) == 0:
            continue  # scalars (a sample rate) have no batch axis
        if not (dims[0].HasField("dim_value") and dims[0].dim_value > 0):
            return {}
        leading[value.name] = int(dims[0].dim_value)
    return leading if len(set(leading.values())) == 1 else {}


def _make_batch_dynamic(graph: onnx.ModelProto, ref: str) -> onnx.ModelProto | None:
    """A copy of ``graph`` whose fixed batch axes are dynamic, verified at batch 2; None (and a
    warning) when the graph hard-codes its batch size: it is then measured and served one
    fixed-size call at a time."""
    fixed = _fixed_batch(graph)
    copy = onnx.ModelProto()
    copy.CopyFrom(graph)
    for _, dim in _leading_dims(copy):
        dim.dim_param = BATCH  # clears dim_value: the two are a oneof
    del copy.graph.value_info[:]  # inferred shapes would still say the old batch size
    feeds = data.synthetic_feeds(Signature.from_onnx(copy), n=2)
    try:  # zeros: only the shapes are checked, and zero is a valid token id
        _verify_batch(copy, {k: np.zeros_like(v) for k, v in feeds.items()})
    except ModelLoadError as exc:
        log.warning(
            "model '%s' has a fixed batch axis %s that the graph hard-codes (%s): it is measured "
            "and served one call of that size at a time; re-export it with a dynamic batch "
            "axis (torch.onnx.export(..., dynamic_axes={'<input>': {0: 'batch'}})) to batch it",
            ref, fixed, exc)
        return None
    log.warning("model '%s' had a fixed batch axis %s; made it dynamic (checked at batch 2)",
                ref, fixed)
    return copy


def _verify_batch(graph: onnx.ModelProto | Path, feeds: dict[str, np.ndarray]) -> None:
    """Run ``graph`` on ONNX Runtime; every output must have as many rows as the feeds."""
    import onnxruntime as ort

    rows = len(next(iter(feeds.values())))
    source = str(graph) if isinstance(graph, Path) else graph.SerializeToString()
    options = ort.SessionOptions()
    options.log_severity_level = 4  # the failure is reported by the caller, in its own words
    try:
        session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        outputs = session.run(None, feeds)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument types
        raise ModelLoadError(f"running it at batch {rows} failed: {_reason(exc)}") from exc
    wrong = [list(o.shape) for o in outputs if o.ndim and o.shape[0] != rows]
    if wrong:
        raise ModelLoadError(f"at batch {rows} it returned outputs shaped {wrong}")


def _store(build: Callable[[Path], None], request: LoadRequest) -> Path:
    """Run ``build(folder)``, which writes ``model.onnx``; return where the graph now lies.

    Without ``workdir`` the folder is ``cache_dir()/imported/<hash of model.onnx>``: one
    graph is stored once, and a stored graph whose content changed is replaced.
    """
    if request.workdir is not None:
        request.workdir.mkdir(parents=True, exist_ok=True)
        build(request.workdir)
        return request.workdir / "model.onnx"
    root = cache_dir() / "imported"
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".import-", dir=root))
    try:
        build(tmp)
        key = content_key([tmp / "model.onnx"])
        stored = root / key / "model.onnx"
        if not (stored.is_file() and content_key([stored]) == key):
            shutil.rmtree(stored.parent, ignore_errors=True)
            try:
                os.replace(tmp, stored.parent)
            except OSError:
                if not stored.is_file():  # else another process stored the same graph first
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return stored


# --- module:attr references and pickles -----------------------------------------------


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


def _load_reference(request: LoadRequest) -> Model:
    module_name, _, attr = request.ref.partition(":")
    try:
        with _cwd_importable():
            obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # the user's module may raise anything while it is imported
        raise ModelLoadError(f"'{request.ref}': cannot import module {module_name!r}: "
                             f"{_failure(exc)}") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelLoadError(f"'{request.ref}': module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return _from_object(obj, request, attr.rsplit(".", 1)[-1])


def _from_object(obj: Any, request: LoadRequest, name: str, *, call: bool = True) -> Model:
    """Dispatch a Python object: torch module, exported program, estimator, or a factory."""
    torch = sys.modules.get("torch")  # such objects exist only once torch has been imported
    if torch is not None and isinstance(obj, torch.nn.Module):
        return _from_torch_module(obj, request, name)
    if torch is not None and isinstance(obj, torch.export.ExportedProgram):
        return _from_torch_module(_program_module(obj), request, name)
    if not isinstance(obj, type) and callable(getattr(obj, "predict", None)):
        return _from_estimator(obj, request, name)
    if call and callable(obj):
        try:
            made = obj()
        except Exception as exc:  # the user's factory may raise anything
            raise ModelLoadError(
                f"'{request.ref}': calling it to build the model failed: {_failure(exc)}"
            ) from exc
        return _from_object(made, request, name, call=False)
    raise ModelLoadError(
        f"'{request.ref}': expected a torch.nn.Module, a scikit-learn estimator (with predict) "
        f"or a callable returning one, got {type(obj).__module__}.{type(obj).__qualname__}"
    )


def _require_trust(request: LoadRequest, what: str) -> None:
    """Formats that unpickle run code from the file: only with ``--trust``."""
    if not request.trust:
        raise UntrustedPickleError(
            f"model file '{request.ref}' is {what}: unpickling runs arbitrary code, so it is "
            f"loaded only with --trust; pass --trust only for files you made"
        )


def _load_pickle(request: LoadRequest) -> Model:
    path = request.file()
    _require_trust(request, "a pickle")
    try:
        import joblib  # sklearn's own dependency; it reads joblib dumps and plain pickles alike
    except ImportError as exc:
        raise MissingExtraError("joblib", "torch", "reading a pickled model") from exc
    try:
        with _cwd_importable():
            obj = joblib.load(path)
    except Exception as exc:  # unpickling raises whatever the pickled code raises
        raise ModelLoadError(
            f"model file '{request.ref}' cannot be unpickled: {_failure(exc)} "
            f"(the classes it refers to must be importable)"
        ) from exc
    return _from_object(obj, request, path.stem, call=False)


# --- PyTorch ---------------------------------------------------------------------------


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise MissingExtraError("torch", "torch", "loading a PyTorch model") from exc
    return torch


def _load_torchscript(request: LoadRequest) -> Model:
    path = request.file()
    torch = _torch()
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # RuntimeError from the zip reader, or anything else
        raise ModelLoadError(
            f"model file '{request.ref}': expected TorchScript (torch.jit.save), got a file that "
            f"torch.jit.load cannot read ({_reason(exc)}); a torch.save() checkpoint holds "
            f"weights or a pickle, not a graph: save with torch.jit.save or torch.export.save, "
            f"or name the module as 'package.module:attr'"
        ) from exc
    return _from_torch_module(module, request, path.stem)


def _load_exported(request: LoadRequest) -> Model:
    path = request.file()
    # torch.export.load can fall back to full unpickling for some archives.
    _require_trust(request, "a torch.export archive, which torch may unpickle")
    torch = _torch()
    try:
        program = torch.export.load(str(path))
    except Exception as exc:  # zip, JSON and schema errors, each of its own type
        raise ModelLoadError(
            f"model file '{request.ref}': expected a torch.export program (torch.export.save), "
            f"got {_failure(exc)}"
        ) from exc
    return _from_torch_module(_program_module(program), request, path.stem)


def _program_module(program: Any) -> Any:
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


def _from_torch_module(module: Any, request: LoadRequest, name: str) -> Model:
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

    path = _store(build, request)
    grown = tuple(torch.cat([e, e[:1]]) for e in examples)  # one more row than traced
    try:
        _verify_batch(path, {n: g.detach().cpu().numpy() for n, g in zip(names, grown, strict=True)})
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
    return _finish(request, path, name, torch_factory=factory,
                   description=f"PyTorch {type(module).__name__} from {request.ref}")


def _forward(module: Any, examples: tuple[Any, ...], names: list[str], ref: str) -> Any:
    torch = _torch()
    try:
        with torch.no_grad():
            return module(*examples)
    except Exception as exc:  # the user's forward may raise anything
        shapes = [f"{n}: {e.dtype} {list(e.shape)}" for n, e in zip(names, examples, strict=True)]
        raise ModelLoadError(
            f"'{ref}': forward() failed on the example inputs {shapes}: {_failure(exc)}"
        ) from exc


@contextlib.contextmanager
def _quiet_export(ref: str) -> Iterator[None]:
    """Silence the exporter's warnings; turn its failures into ModelLoadError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    except Exception as exc:  # the exporter raises many unrelated types
        raise ModelLoadError(f"'{ref}': exporting to ONNX failed: {_failure(exc)}") from exc


# --- scikit-learn ----------------------------------------------------------------------


def _from_estimator(estimator: Any, request: LoadRequest, name: str) -> Model:
    """Convert with skl2onnx: float32 features ``[batch, n_features_in_]``, no ZipMap."""
    try:
        from skl2onnx import to_onnx
        from skl2onnx.common.data_types import FloatTensorType
        from sklearn.base import is_classifier
    except ImportError as exc:
        raise MissingExtraError("scikit-learn and skl2onnx", "torch",
                                "loading a scikit-learn model") from exc
    features = getattr(estimator, "n_features_in_", None)
    if features is None:
        raise ModelLoadError(f"'{request.ref}': expected a fitted estimator, got an unfitted "
                             f"{type(estimator).__name__} (it has no n_features_in_)")
    classifier = is_classifier(estimator)

    def build(folder: Path) -> None:
        try:
            graph = to_onnx(estimator, initial_types=[("input", FloatTensorType([None, features]))],
                            options={id(estimator): {"zipmap": False}} if classifier else None,
                            target_opset=OPSET)
        except Exception as exc:  # skl2onnx raises RuntimeError, MissingShapeCalculator, ...
            raise ModelLoadError(f"'{request.ref}': skl2onnx cannot convert "
                                 f"{type(estimator).__name__}: {_failure(exc)}") from exc
        outputs = sorted(graph.graph.output, key=lambda o: o.name != "probabilities")
        del graph.graph.output[:]  # probabilities first: the output accuracy is computed on
        graph.graph.output.extend(outputs)
        for _, dim in _leading_dims(graph):  # skl2onnx leaves the batch axis unnamed
            dim.dim_param = BATCH
        onnx.save(graph, str(folder / "model.onnx"))

    path = _store(build, request)
    model = _finish(request, path, name,
                    task=Task.CLASSIFICATION if classifier else Task.REGRESSION,
                    description=f"scikit-learn {type(estimator).__name__} from {request.ref}")
    labels = model.eval_data.labels
    if classifier and labels is not None:  # accuracy compares them with argmax(probabilities)
        indices = data.label_indices(labels, estimator.classes_, f"--data {request.data}")
        model.eval_data = replace(model.eval_data, labels=indices)
    return model


SUFFIX_LOADERS: dict[str, Loader] = {
    ".onnx": _load_onnx,
    ".pt2": _load_exported,
    **dict.fromkeys((".pt", ".pth", ".ts", ".torchscript"), _load_torchscript),
    **dict.fromkeys((".pkl", ".pickle", ".joblib"), _load_pickle),
}
"""File suffix → loader. Bundled names are tried before, ``module:attr`` after."""
