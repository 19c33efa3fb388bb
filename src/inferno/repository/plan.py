"""A ``Plan``: the chosen variant as recorded in ``plan.json``, and the runner that replays it.

A plan folder is data, and data never runs code: unless the runner is trusted (``--trust``,
for repositories you wrote), a plan that needs its Python source (a PyTorch runtime) is
refused before anything is imported, and every file the plan leads to (the plan itself, the
graph, the tokenizer) must resolve inside the repository, ``REPO`` of ``REPO/<model>/<version>``.
Messages name files relative to the repository, never by an absolute path.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from inferno.errors import DataMismatchError, InfernoError, ModelLoadError, UserInputError
from inferno.models.model import Preprocessor, TensorPreprocessor
from inferno.models.signature import Signature, Task
from inferno.models.text import TextPreprocessor
from inferno.repository import MODEL_FILE, PLAN_FILE, inside, redact, relative
from inferno.runtimes import RUNTIMES, Artifact, RuntimeOptions, RuntimeSettings
from inferno.runtimes.base import Runtime, device_of


@dataclass(frozen=True)
class Plan:
    name: str
    variant: str
    passes: tuple[str, ...]
    runtime: str
    provider: str
    threads: int
    graph_precision: str
    compute_precision: str
    hints: dict[str, Any]
    """``RuntimeOptions.to_dict()``: the runtime options that differ from their defaults."""
    task: str
    signature: dict[str, Any]
    preprocessor: dict[str, Any]
    metrics: dict[str, float]
    within_budget: bool
    budget: dict[str, float]
    objective: str
    batch_size: int
    throughput_per_s: float
    latency_ms_p50: float
    source: str
    model_sha256: str
    inferno_version: str
    created: str
    notes: tuple[str, ...] = field(default=())
    requested_provider: str | None = None
    """What ``accelerate`` asked the runtime for (None: its CPU default); ``provider`` is what ran."""
    shapes: dict[str, list[int]] = field(default_factory=dict)
    """One row of each input as measured (graph layout, batch axis of size 1): what
    ``inferno serve`` warms up and checks the plan with."""

    @property
    def device(self) -> str:
        return device_of(self.requested_provider)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def load(cls, folder: Path) -> Plan:
        """Read ``folder/plan.json``; errors name it relative to the repository.

        Raises:
            ModelLoadError: no plan there, or not a plan.
        """
        path = Path(folder) / PLAN_FILE
        shown = relative(path, _root(Path(folder)))
        try:
            data = json.loads(path.read_text())
            data["passes"] = tuple(data["passes"])
            data["notes"] = tuple(data.get("notes", ()))
            return cls(**data)
        except FileNotFoundError as exc:
            raise ModelLoadError(f"no plan at {shown}: expected a version folder written by `inferno accelerate`") from exc
        except (ValueError, TypeError, KeyError) as exc:
            raise ModelLoadError(f"plan {shown} is unreadable: {exc}") from exc


_OUTSIDE = "a server reads files outside its repository only with --trust (start it with --trust for repositories you wrote)"


def _root(folder: Path) -> Path:
    """The repository of a version folder ``REPO/<model>/<version>``: ``REPO``, as written."""
    return Path(os.path.abspath(folder)).parent.parent


def _confined(path: Path, root: Path, what: str, shown: str) -> Path:
    """``path``, refused when it resolves (symlinks followed) outside the repository."""
    if not inside(path, root):
        raise ModelLoadError(f"{what} {shown!r}: outside the repository; expected a path in it "
                             f"(symlinks are followed); {_OUTSIDE}")
    return path


def _preprocessor(plan: Plan, folder: Path, trust: bool) -> Preprocessor:
    info = plan.preprocessor
    shown = relative(folder / PLAN_FILE, _root(folder))
    try:
        if info.get("kind") == "text":
            return TextPreprocessor(
                _tokenizer(str(info["tokenizer"]), folder, trust), int(info["max_length"]),
                tuple(str(n) for n in info["input_names"]),
            )
        axes = info.get("batch_axes") or {}
        return TensorPreprocessor(batch_axes={str(k): None if v is None else int(v) for k, v in axes.items()})
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ModelLoadError(
            f"plan {shown} is unreadable: preprocessor: expected a text preprocessor (tokenizer, max_length, "
            f"input_names) or batch_axes, got {exc.__class__.__name__}: {exc}"
        ) from exc


def _tokenizer(name: str, folder: Path, trust: bool) -> Path:
    """The tokenizer file a text plan names, relative to its version folder."""
    path = folder / name
    if trust:
        return path
    if Path(name).is_absolute():
        raise ModelLoadError(
            f"tokenizer: expected a path relative to the version folder {relative(folder, _root(folder))}, "
            f"got an absolute path; {_OUTSIDE}"
        )
    return _confined(path, _root(folder), "tokenizer", name)


class PlanRunner:
    """Runs a plan exactly as recorded: same file, runtime, provider, threads and precision.

    Args:
        folder: the version folder, ``REPO/<model>/<version>``.
        threads: overrides the plan's thread count.
        trust: the repository is the caller's own (``--trust``): a plan may then import its
            Python source (PyTorch runtimes) and name files outside the repository.
        runtime: runs the model instead of the plan's runtime, which is then not loaded here
            (``inferno.distributed``: the model runs on Ray replicas, this process keeps the
            plan, signature and preprocessor).

    Raises:
        ModelLoadError: the plan is missing or unreadable, needs code or a file outside the
            repository without ``trust``, or its model cannot be loaded (the runtime's words,
            with paths relative to the repository).
    """

    def __init__(self, folder: Path, threads: int | None = None, *, trust: bool = False,
                 runtime: Runtime | None = None) -> None:
        self.folder = Path(folder)
        self.trust = trust
        root = _root(self.folder)
        model_file = self.folder / MODEL_FILE
        if not trust:  # the folder and plan file first: nothing outside is read
            _confined(self.folder, root, "version folder", relative(self.folder, root))
            _confined(self.folder / PLAN_FILE, root, "plan file", relative(self.folder / PLAN_FILE, root))
        self.plan = Plan.load(self.folder)
        if not trust:
            _refuse_code(self.plan)
            _confined(model_file, root, "model file", relative(model_file, root))
        try:
            self.signature = Signature.from_dict(self.plan.signature)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelLoadError(f"plan {relative(self.folder / PLAN_FILE, root)} is unreadable: "
                                 f"signature: {exc.__class__.__name__}: {exc}") from exc
        self.preprocessor = _preprocessor(self.plan, self.folder, trust)
        if runtime is not None:  # the plan's model is loaded elsewhere (a Ray replica's)
            self.runtime: Runtime = runtime
            return
        runtime_cls = RUNTIMES.get(self.plan.runtime)
        if runtime_cls is None or not runtime_cls.available():
            raise ModelLoadError(f"plan needs runtime {self.plan.runtime!r}, which is not installed here")
        self.runtime = runtime_cls(
            RuntimeSettings(threads or self.plan.threads, self.plan.requested_provider)
        )
        # cache_dir: where runtimes persist what they build (TensorRT engines), so a restart
        # finds them in the version folder instead of rebuilding.
        artifact = Artifact(
            model_file, self.signature.input_names,
            self.plan.graph_precision, self.plan.compute_precision,
            torch_factory=_torch_factory(self.plan, trust),
            options=replace(RuntimeOptions.from_dict(self.plan.hints), cache_dir=self.folder),
        )
        try:
            self.runtime.load(artifact)
        except InfernoError:
            raise
        except Exception as exc:  # the runtime's own error: a graph it cannot read or build
            raise ModelLoadError(f"model file {relative(model_file, root)!r}: {self.plan.runtime} cannot "
                                 f"load it: {redact(str(exc).strip(), root)}") from exc

    @property
    def device(self) -> str:
        """``cuda`` when the plan runs on a GPU provider, else ``cpu``."""
        return self.plan.device

    @property
    def task(self) -> Task:
        return Task(self.plan.task)

    def predict(self, inputs: Sequence[str] | np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
        """Natural inputs in, main output out: a list of strings for text models, else arrays
        with rows on axis 0 (moved to the graph's batch axes here; see ``TensorPreprocessor``)."""
        if self.preprocessor.kind == "text":
            if isinstance(inputs, str) or not isinstance(inputs, Sequence) or not all(isinstance(s, str) for s in inputs):
                raise UserInputError("a text model's predict() takes a list of strings")
            feeds = self.preprocessor.encode(list(inputs))
        elif isinstance(inputs, dict):
            feeds = self.preprocessor.encode(dict(inputs))
        else:
            if len(self.signature.inputs) != 1:
                raise DataMismatchError(
                    f"this model has {len(self.signature.inputs)} inputs {list(self.signature.input_names)}: pass a dict"
                )
            feeds = self.preprocessor.encode({self.signature.inputs[0].name: np.asarray(inputs)})
        self.signature.check_feeds(feeds)
        return self.runtime.run(feeds)[self.signature.primary_output()]

    def close(self) -> None:
        self.runtime.close()


def _refuse_code(plan: Plan) -> None:
    """A plan on a PyTorch runtime rebuilds its module from its Python source: code, not data."""
    if plan.runtime.startswith("torch"):
        raise ModelLoadError(
            f"plan runs on {plan.runtime} from source {_shown_source(plan.source)!r}: that imports Python code; a server "
            "loads such a plan only with --trust (start it with --trust for repositories you wrote)"
        )


def _shown_source(source: str) -> str:
    """A plan's source as a message shows it: a file recorded by its absolute path, by its name."""
    path = Path(source)
    return path.name if path.is_absolute() else source


def _torch_factory(plan: Plan, trust: bool) -> Callable[[], Any] | None:
    """The source module for plans that run in PyTorch, rebuilt from the plan's source.

    ONNX is what a version folder holds; a plan chosen on a PyTorch runtime (``torch``,
    ``torch-compile``) runs the source module instead, so it is loaded again from where
    ``accelerate`` found it (a bundled name, a file, a ``module:attr`` reference). That
    imports code: only for trusted runners (``PlanRunner`` refuses such plans otherwise).
    """
    if not plan.runtime.startswith("torch"):
        return None
    from inferno.models.loaders import load_model

    ref = plan.source.removeprefix("bundled:")
    try:
        factory = load_model(ref, trust=trust).torch_factory
    except InfernoError as exc:
        shown = _shown_source(plan.source)
        raise ModelLoadError(f"plan runs on {plan.runtime} from source {shown!r}, which cannot be loaded here: "
                             f"{str(exc).replace(ref, shown)}") from exc
    if factory is None:
        raise ModelLoadError(f"plan runs on {plan.runtime} but its source {_shown_source(plan.source)!r} has no PyTorch module")
    return factory


def load_plan(path: str | Path, threads: int | None = None, *, trust: bool = False) -> PlanRunner:
    """Load a plan folder (``REPO/<model>/<version>``) written by ``accelerate``.

    ``trust``: the folder is your own; see :class:`PlanRunner` (a PyTorch plan needs it).
    """
    return PlanRunner(Path(path), threads, trust=trust)
