"""What every loader shares: the request, the finished ``Model`` and the store of generated graphs.

``finish`` wraps a graph on disk into a ``Model`` (signature, task, evaluation data, the sizes
of dynamic axes); ``store`` puts a generated graph in ``workdir`` or the cache's
``imported/<graph hash>/``; ``require_trust`` guards every format that unpickles.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
from google.protobuf.message import DecodeError

from inferno.config import cache_dir
from inferno.errors import ModelLoadError, UntrustedPickleError
from inferno.models import data, shapes
from inferno.models.model import Model, tensor_preprocessor
from inferno.models.shapes import parse_shapes
from inferno.models.signature import Signature, Task
from inferno.models.zoo.cache import content_key

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


def infer_task(signature: Signature) -> Task:
    """A 2-D float first output ``[batch, C]`` with a fixed ``C > 1`` → CLASSIFICATION, else OTHER."""
    first = signature.outputs[0] if signature.outputs else None
    if first is None or not first.dtype.startswith(("float", "bfloat")) or len(first.shape) != 2:
        return Task.OTHER
    classes = first.shape[1]
    return Task.CLASSIFICATION if isinstance(classes, int) and classes > 1 else Task.OTHER


def finish(request: LoadRequest, onnx_path: Path, name: str, *, task: Task | None = None,
            torch_factory: Callable[[], Any] | None = None, description: str = "",
            probe: bool = False) -> Model:
    """The Model around a graph on disk: signature, task, evaluation data and input sizes.

    ``probe``: the graph is the user's own (not one inferno exported), so its batch axes and
    the sizes of its dynamic axes are found by running it (``models.shapes``).
    """
    signature = Signature.from_onnx(read_onnx(onnx_path, request.ref))
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
        raise ModelLoadError(f"model '{ref}': ONNX Runtime cannot load it: {reason(exc)}") from exc
    return shapes.search(session, signature, given, data.synthetic_feeds_at)


def read_onnx(path: Path, ref: str, *, check: bool = False) -> onnx.ModelProto:
    """The graph (without external weights); with ``check``, also run the ONNX checker."""
    try:
        graph = onnx.load(str(path), load_external_data=False)
        if check:
            onnx.checker.check_model(str(path))  # by path: works past 2 GB and external data
    except DecodeError as exc:
        raise ModelLoadError(f"model file '{ref}': expected an ONNX model, got bytes that do not "
                             f"parse as one ({reason(exc)})") from exc
    except onnx.checker.ValidationError as exc:
        raise ModelLoadError(f"model file '{ref}' is not a valid ONNX model: {reason(exc)}") from exc
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"model file '{ref}' cannot be read: {reason(exc)}") from exc
    return graph


def store(build: Callable[[Path], None], request: LoadRequest) -> Path:
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


def require_trust(request: LoadRequest, what: str) -> None:
    """Formats that unpickle run code from the file: only with ``--trust``."""
    if not request.trust:
        raise UntrustedPickleError(
            f"model file '{request.ref}' is {what}: unpickling runs arbitrary code, so it is "
            f"loaded only with --trust; pass --trust only for files you made"
        )


def reason(exc: BaseException) -> str:
    """The first line of an exception's message, cut at 200 characters (third-party ones run long)."""
    lines = str(exc).strip().splitlines()
    line = lines[0].strip() if lines else type(exc).__name__
    return line if len(line) <= 200 else line[:197] + "..."


def failure(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {reason(exc)}"
