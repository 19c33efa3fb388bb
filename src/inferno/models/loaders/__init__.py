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

One module per source: ``base`` (the request and what every loader shares: the finished
``Model``, the graph store), ``onnx`` (ONNX files, batch axes), ``torch`` (TorchScript,
``torch.export`` programs, ``nn.Module`` objects), ``sklearn`` (estimators) and ``python``
(``module:attr`` references and pickles, with ``--trust``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from inferno.errors import ModelLoadError, UnknownModelError, UserInputError
from inferno.models import data
from inferno.models.loaders.base import (
    BATCH,
    EXAMPLE_ROWS,
    OPSET,
    SEQUENCE,
    Loader,
    LoadRequest,
    infer_task,
)
from inferno.models.loaders.onnx import load_onnx
from inferno.models.loaders.python import load_pickle, load_reference
from inferno.models.loaders.torch import load_exported, load_torchscript
from inferno.models.model import Model
from inferno.models.signature import Task
from inferno.models.student import INFO_FILE as STUDENT_INFO
from inferno.models.student import is_student_folder, load_student
from inferno.models.zoo import BUNDLED, load_bundled

__all__ = [
    "BATCH",
    "EXAMPLE_ROWS",
    "OPSET",
    "SEQUENCE",
    "SUFFIX_LOADERS",
    "LoadRequest",
    "Loader",
    "infer_task",
    "load_model",
    "loader_for",
]


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
        return load_reference
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


# --- bundled names and student folders ---------------------------------------------------


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


SUFFIX_LOADERS: dict[str, Loader] = {
    ".onnx": load_onnx,
    ".pt2": load_exported,
    **dict.fromkeys((".pt", ".pth", ".ts", ".torchscript"), load_torchscript),
    **dict.fromkeys((".pkl", ".pickle", ".joblib"), load_pickle),
}
"""File suffix → loader. Bundled names are tried before, ``module:attr`` after."""
