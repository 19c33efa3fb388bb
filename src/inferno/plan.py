"""A ``Plan``: the chosen variant as recorded in ``plan.json``, and the runner that replays it."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inferno.errors import DataMismatchError, InfernoError, ModelLoadError, UserInputError
from inferno.models.model import Preprocessor, TensorPreprocessor
from inferno.models.signature import Signature, Task
from inferno.models.text import TextPreprocessor
from inferno.repository import MODEL_FILE, PLAN_FILE
from inferno.runtimes import RUNTIMES, Artifact, RuntimeSettings
from inferno.runtimes.base import device_of


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
        path = Path(folder) / PLAN_FILE
        try:
            data = json.loads(path.read_text())
            data["passes"] = tuple(data["passes"])
            data["notes"] = tuple(data.get("notes", ()))
            return cls(**data)
        except FileNotFoundError as exc:
            raise ModelLoadError(f"no plan at {path}: expected a version folder written by `inferno accelerate`") from exc
        except (ValueError, TypeError, KeyError) as exc:
            raise ModelLoadError(f"plan {path} is unreadable: {exc}") from exc


def _preprocessor(plan: Plan, folder: Path) -> Preprocessor:
    info = plan.preprocessor
    if info.get("kind") == "text":
        return TextPreprocessor(
            folder / info["tokenizer"], int(info["max_length"]), tuple(info["input_names"])
        )
    axes = info.get("batch_axes") or {}
    return TensorPreprocessor(batch_axes={str(k): None if v is None else int(v) for k, v in axes.items()})


class PlanRunner:
    """Runs a plan exactly as recorded: same file, runtime, provider, threads and precision."""

    def __init__(self, folder: Path, threads: int | None = None) -> None:
        self.folder = Path(folder)
        self.plan = Plan.load(self.folder)
        self.signature = Signature.from_dict(self.plan.signature)
        self.preprocessor = _preprocessor(self.plan, self.folder)
        runtime_cls = RUNTIMES.get(self.plan.runtime)
        if runtime_cls is None or not runtime_cls.available():
            raise ModelLoadError(f"plan needs runtime {self.plan.runtime!r}, which is not installed here")
        self.runtime = runtime_cls(
            RuntimeSettings(threads or self.plan.threads, self.plan.requested_provider)
        )
        # cache_dir: where runtimes persist what they build (TensorRT engines), so a restart
        # finds them in the version folder instead of rebuilding.
        self.runtime.load(Artifact(
            self.folder / MODEL_FILE, self.signature.input_names,
            self.plan.graph_precision, self.plan.compute_precision,
            torch_factory=_torch_factory(self.plan),
            hints={**self.plan.hints, "cache_dir": str(self.folder)},
        ))

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


def _torch_factory(plan: Plan) -> Callable[[], Any] | None:
    """The source module for plans that run in PyTorch, rebuilt from the plan's source.

    ONNX is what a version folder holds; a plan chosen on a PyTorch runtime (``torch``,
    ``torch-compile``) runs the source module instead, so it is loaded again from where
    ``accelerate`` found it (a bundled name, a file, a ``module:attr`` reference).
    """
    if not plan.runtime.startswith("torch"):
        return None
    from inferno.models.loaders import load_model

    ref = plan.source.removeprefix("bundled:")
    try:
        factory = load_model(ref).torch_factory
    except InfernoError as exc:
        raise ModelLoadError(f"plan runs on {plan.runtime} from source {plan.source!r}, which cannot be loaded here: {exc}") from exc
    if factory is None:
        raise ModelLoadError(f"plan runs on {plan.runtime} but its source {plan.source!r} has no PyTorch module")
    return factory


def load_plan(path: str | Path, threads: int | None = None) -> PlanRunner:
    """Load a plan folder (``REPO/<model>/<version>``) written by ``accelerate``."""
    return PlanRunner(Path(path), threads)
