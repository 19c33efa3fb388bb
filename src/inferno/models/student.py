"""Student folders: a smaller model made from a teacher (distilled or pruned), on disk.

Layout of a folder (written by ``write_student``, read by ``load_student``)::

    model.onnx     FP32 graph, dynamic batch, the teacher's input and output names
    weights.pt     the PyTorch state dict (rebuilds the module: the eager baseline, pruning)
    student.json   {"format": "inferno-student", "version": 1, "teacher": "digits",
                    "method": "distill" | "prune", "family": "digits-cnn" | "bert",
                    "architecture": {...}, "spec": "...", "report": {...measured figures...},
                    "created": "...", "inferno_version": "..."}

``teacher`` is the reference the student was made from (as ``load_model`` takes it): a loaded
student brings the teacher's evaluation data, calibration samples, preprocessor and task, so
every accuracy figure on a student is measured on the teacher's data. ``family`` names the
function that rebuilds the PyTorch module from ``architecture`` and ``weights.pt``
(``STUDENT_FAMILIES``, imported on use: this module imports no torch).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import importlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import onnx

from inferno.errors import ConfigError, ModelLoadError
from inferno.models.model import Model
from inferno.models.signature import Signature

FORMAT = "inferno-student"
VERSION = 1
INFO_FILE = "student.json"
MODEL_FILE = "model.onnx"
WEIGHTS_FILE = "weights.pt"
METHODS = ("distill", "prune")
_DONE = {"distill": "distilled", "prune": "pruned"}

STUDENT_FAMILIES: dict[str, str] = {
    "digits-cnn": "inferno.models.zoo.digits:restore_student",
    "bert": "inferno.models.zoo.minilm:restore_student",
}
"""Family → ``"module:function"``; the function takes ``(folder, architecture)`` and returns
the student ``torch.nn.Module`` in eval mode, its weights read from ``folder/weights.pt``."""

ProgressFn = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: what distillation and pruning report while they work."""


@dataclass(frozen=True)
class StudentInfo:
    """What ``student.json`` says about a student folder."""

    folder: Path
    teacher: str
    """The teacher's reference, as ``load_model`` takes it (e.g. ``digits``)."""
    method: str
    """``distill`` or ``prune``."""
    family: str
    """Key of ``STUDENT_FAMILIES``: what rebuilds the PyTorch module."""
    architecture: dict[str, Any]
    spec: str
    """What the user asked for (``channels=16,32;hidden=64``, ``ratio=0.5``, ...)."""
    report: dict[str, Any] = field(default_factory=dict)
    """Measured figures: sizes, parameters, accuracy, agreement, speed, training seconds."""
    created: str = ""
    inferno_version: str = ""

    @property
    def model_path(self) -> Path:
        return self.folder / MODEL_FILE

    @property
    def weights_path(self) -> Path:
        return self.folder / WEIGHTS_FILE

    def to_dict(self) -> dict[str, Any]:
        """The content of ``student.json``."""
        return {"format": FORMAT, "version": VERSION, "teacher": self.teacher,
                "method": self.method, "family": self.family, "architecture": self.architecture,
                "spec": self.spec, "report": self.report, "created": self.created,
                "inferno_version": self.inferno_version}


def is_student_folder(path: Path) -> bool:
    """Whether ``path`` is a folder with a ``student.json`` (valid or not)."""
    return Path(path).is_dir() and (Path(path) / INFO_FILE).is_file()


_FIELDS: dict[str, type] = {"teacher": str, "method": str, "family": str, "architecture": dict,
                            "spec": str, "report": dict, "created": str, "inferno_version": str}


def read_student_info(folder: Path) -> StudentInfo:
    """Read and check ``folder/student.json`` (and that the model and weights files exist).

    Raises:
        ModelLoadError: naming the file and what is wrong with it.
    """
    folder = Path(folder)
    path = folder / INFO_FILE
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"student file '{path}' cannot be read as JSON: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise ModelLoadError(f"student file '{path}': expected format {FORMAT!r}, got {found!r}")
    if raw.get("version") != VERSION:
        raise ModelLoadError(f"student file '{path}': expected version {VERSION}, got "
                             f"{raw.get('version')!r} (written by a newer inferno?)")
    for key, kind in _FIELDS.items():
        if not isinstance(raw.get(key), kind):
            raise ModelLoadError(f"student file '{path}': expected {key!r} to be a {kind.__name__}, "
                                 f"got {raw.get(key)!r}")
    if raw["method"] not in METHODS:
        raise ModelLoadError(f"student file '{path}': expected method one of {list(METHODS)}, "
                             f"got {raw['method']!r}")
    if raw["family"] not in STUDENT_FAMILIES:
        raise ModelLoadError(f"student file '{path}': unknown family {raw['family']!r}, expected "
                             f"one of {sorted(STUDENT_FAMILIES)}")
    for name in (MODEL_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise ModelLoadError(f"student folder '{folder}': {name} is missing (student.json "
                                 f"is there)")
    return StudentInfo(folder=folder, **{key: raw[key] for key in _FIELDS})


def write_student(folder: Path, *, teacher: str, method: str, family: str,
                  architecture: Mapping[str, Any], spec: str,
                  fill: Callable[[Path], Mapping[str, Any]]) -> StudentInfo:
    """Write a student folder: ``fill(staging)`` writes ``model.onnx`` and ``weights.pt`` into a
    staging folder and returns the measured report; then ``student.json`` is written and the
    staging folder renamed into place (an existing student folder there is replaced).

    Raises:
        ConfigError: ``folder`` exists and is a file, or a non-empty folder that is not a
            student folder (nothing of the user's is overwritten), or ``method``/``family``
            is unknown, or ``fill`` left a file out.
    """
    folder = Path(folder)
    check_target(folder)
    if method not in METHODS or family not in STUDENT_FAMILIES:
        raise ConfigError(f"student {folder}: expected method in {list(METHODS)} and family in "
                          f"{sorted(STUDENT_FAMILIES)}, got {method!r} and {family!r}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        report = dict(fill(staging))
        missing = [n for n in (MODEL_FILE, WEIGHTS_FILE) if not (staging / n).is_file()]
        if missing:
            raise ConfigError(f"student {folder}: the {method} step wrote no {', '.join(missing)}")
        from inferno._version import __version__

        info = StudentInfo(
            folder=folder, teacher=teacher, method=method, family=family,
            architecture=dict(architecture), spec=spec, report=report,
            created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            inferno_version=__version__,
        )
        (staging / INFO_FILE).write_text(json.dumps(info.to_dict(), indent=1) + "\n")
        _publish(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return info


def check_target(folder: Path) -> None:
    """A student may be written to ``folder``: absent, empty, or a student folder (replaced).

    Raises:
        ConfigError: ``folder`` is a file, or a non-empty folder that is not a student folder.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--out {folder}: expected a folder for the student, got a file")
    if folder.is_dir() and any(folder.iterdir()) and not is_student_folder(folder):
        raise ConfigError(f"--out {folder}: expected a new or empty folder or a student folder "
                          f"(with {INFO_FILE}) to replace, got a non-empty folder without one")


def _publish(staging: Path, folder: Path) -> None:
    """Rename ``staging`` to ``folder``; an existing folder is moved aside first, then removed."""
    old = None
    if folder.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{folder.name}-old-", dir=folder.parent))
        os.replace(folder, old / "student")
    try:
        os.replace(staging, folder)
    except OSError:
        if old is not None:  # put the previous student back
            with contextlib.suppress(OSError):
                os.replace(old / "student", folder)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def rebuild_module(folder: Path, family: str, architecture: dict[str, Any]) -> Any:
    """The student's PyTorch module, rebuilt by its family's function (see ``STUDENT_FAMILIES``).

    Raises:
        ModelLoadError: unknown family, or the family's module cannot be imported.
    """
    target = STUDENT_FAMILIES.get(family)
    if target is None:
        raise ModelLoadError(f"student {folder}: unknown family {family!r}, expected one of "
                             f"{sorted(STUDENT_FAMILIES)}")
    module_name, _, function = target.partition(":")
    try:
        rebuild = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError) as exc:
        raise ModelLoadError(f"student {folder}: family {family!r} needs {target}, which is not "
                             f"available: {exc}") from exc
    return rebuild(Path(folder), architecture)


def _names(signature: Signature) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return signature.input_names, tuple(t.name for t in signature.outputs)


def load_student(folder: Path, *, name: str | None = None) -> Model:
    """The student in ``folder`` as a ``Model`` with its teacher's data, preprocessor and task.

    The teacher is loaded with ``load_model(info.teacher)``; the student's graph replaces its
    graph. ``name`` defaults to the folder's name; ``source`` is the folder; ``torch_factory``
    rebuilds the student module; ``architecture`` is the teacher's with the student's on top.

    Raises:
        ModelLoadError: a corrupt ``student.json``, a missing file, a graph that does not read,
            or one whose inputs/outputs are not named like the teacher's.
    """
    from inferno.models.loaders import load_model  # loaders dispatches here: import on use

    folder = Path(folder)
    info = read_student_info(folder)
    teacher = load_model(info.teacher)
    try:
        graph = onnx.load(str(info.model_path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and OSError alike
        raise ModelLoadError(f"student model '{info.model_path}' cannot be read: {exc}") from exc
    signature = Signature.from_onnx(graph)
    expected, found = _names(teacher.signature), _names(signature)
    if found != expected:
        raise ModelLoadError(f"student model '{info.model_path}': expected inputs/outputs named "
                             f"like its teacher {info.teacher!r} {expected}, got {found}")
    return replace(
        teacher, name=name or folder.name, onnx_path=info.model_path, signature=signature,
        torch_factory=functools.partial(rebuild_module, folder, info.family, info.architecture),
        architecture={**teacher.architecture, **info.architecture, "family": info.family},
        source=str(folder),
        description=f"{_DONE[info.method]} student of '{info.teacher}' ({info.spec or 'defaults'})",
    )
