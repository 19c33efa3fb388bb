"""Served models: each version with its instances, batcher, cache and statistics; hot swap.

A version is built (runtime sessions loaded and warmed) in a worker thread while the old
one keeps serving; it is published with one assignment on the event loop, and the old one
is then drained: every request it had accepted still finishes. A handler looks up its
version and submits to its batcher without awaiting in between, so no request can land
on a version that is already draining. A model its caller builds (the cascade) is attached
beside the repository's and served alike, but never loaded, reloaded or unloaded.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inferno import repository
from inferno.errors import (
    ConfigError,
    InfernoError,
    ModelLoadError,
    ModelUnavailableError,
    ServiceUnavailableError,
    UnknownModelError,
    UserInputError,
)
from inferno.models.model import as_rows
from inferno.models.text import TextPreprocessor
from inferno.monitoring.metrics import ServingMetrics
from inferno.monitoring.monitor import Monitor, MonitorSettings
from inferno.monitoring.predlog import PredictionLog
from inferno.monitoring.profile import PROFILE_FILE, ReferenceProfile
from inferno.protocol.datatypes import DATATYPES, config_type
from inferno.repository.plan import Plan
from inferno.serving.batcher import DynamicBatcher
from inferno.serving.cache import ResponseCache, cache_key
from inferno.serving.config import ModelServeConfig, ServeConfig, default_max_batch
from inferno.serving.pipelines import (
    Answer,
    Outputs,
    Pipeline,
    TensorPipeline,
    Work,
    build_pipeline,
    respond,
    warm_up,
)
from inferno.serving.protocol import InferRequest
from inferno.serving.served import RunnerFactory, Served, local_runners, refuse_large_response
from inferno.serving.stats import VersionStats

log = logging.getLogger(__name__)

CANONICAL_VERSION = re.compile(r"[1-9][0-9]{0,17}")
"""A version as the repository writes it: ASCII digits, no leading zero (``01``, `` 1`` and
non-ASCII digits would otherwise all reach version 1 through ``int``)."""

_PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "openvino": "openvino", "openvino-streams": "openvino",
              "openvino-static": "openvino", "openvino-streams-static": "openvino"}


class ServedVersion:
    """One version of a model, ready to serve."""

    def __init__(self, name: str, version: int, folder: Path, config: ModelServeConfig,
                 pipelines: list[Pipeline], metrics: ServingMetrics,
                 prediction_log: PredictionLog | None = None, response_limit: int | None = None) -> None:
        self.name = name
        self.response_limit = response_limit
        """Most bytes one response may hold (the server's ``max_response_bytes``); None: no limit."""
        self.version = str(version)
        self.folder = folder
        self.config = config
        self.max_batch_size = config.max_batch_size or default_max_batch(pipelines[0].runner.device)
        """The configured batch limit, or the plan device's default (GPU plans batch larger)."""
        self.pipelines = pipelines
        self._outputs = {t.name: t for t in pipelines[0].outputs}
        self._row_sizes = {name: self._row_size(name) for name in self._outputs}  # asked per request
        self.plan: Plan = pipelines[0].runner.plan
        self.cache = ResponseCache(config.cache_bytes) if config.cache_bytes else None
        bound = metrics.bind(name, self.version, runtime=self.plan.runtime, provider=self.provider,
                             precision=self.plan.compute_precision, queue_depth=lambda: self.batcher.queue_depth)
        self.stats = VersionStats(bound, [p.times for p in pipelines])
        self.monitor = _monitor(self, metrics, prediction_log)
        self.batcher: DynamicBatcher[Work, Outputs] = DynamicBatcher(
            [p.execute if self.monitor is None else _watched(p, self.monitor) for p in pipelines],
            max_batch_size=self.max_batch_size,
            max_queue_delay_s=config.max_queue_delay_us / 1e6,
            max_queue_size=config.max_queue_size,
            observer=self.stats,
        )
        self.ready = False

    @classmethod
    def build(cls, name: str, version: int, folder: Path, config: ModelServeConfig,
              metrics: ServingMetrics, prediction_log: PredictionLog | None = None, *,
              trust: bool = False, response_limit: int | None = None,
              runners: RunnerFactory = local_runners) -> ServedVersion:
        """Load every instance and warm it up (blocking: call from a worker thread).

        ``trust``: the plan may import Python code and name files outside the repository.
        """
        made = runners(name, version, folder, config, trust)
        pipelines: list[Pipeline] = []
        try:
            for runner in made:
                pipeline = build_pipeline(runner, config.group_by_length)
                pipelines.append(pipeline)
                warm_up(pipeline)
        except BaseException:
            for p in pipelines:
                p.close()
            for r in made[len(pipelines):]:
                r.close()
            raise
        try:
            return cls(name, version, folder, config, pipelines, metrics, prediction_log, response_limit)
        except BaseException:
            for p in pipelines:
                p.close()
            raise

    @property
    def provider(self) -> str:
        return self.pipelines[0].runner.runtime.provider

    def start(self) -> None:
        self.batcher.start()
        self.ready = True

    @property
    def queue_full(self) -> bool:
        return self.batcher.queue_depth >= self.batcher.max_queue_size

    @property
    def queue_full_message(self) -> str:
        return (f"model {self.name!r}: queue full: {self.batcher.max_queue_size} requests waiting "
                f"(max_queue_size {self.batcher.max_queue_size})")

    def admit(self, started: float) -> None:
        """Refuse a request the queue has no room for, before its body is read (503)."""
        if self.queue_full:
            self.stats.request_failed(time.perf_counter() - started, "rejected")
            raise ServiceUnavailableError(self.queue_full_message, 1.0)

    def check_response_size(self, size: int, started: float) -> None:
        """Refuse a response over the budget (400) rather than send it."""
        refuse_large_response(self.stats, self.response_limit, size, started)

    def _response_floor(self, work: Work) -> int:
        """The fewest bytes the response to ``work`` can take, from the output shapes alone:
        ``itemsize`` per element in binary, 2 per element in JSON (a digit and a comma)."""
        total = 0
        for out in work.outputs:
            elements, itemsize, batched = self._row_sizes.get(out.name, (None, 0, False))
            if elements is None:
                continue
            per_row = out.classification if out.classification else elements
            width = itemsize if out.binary else 2
            total += (work.rows if batched else 1) * per_row * (2 if out.classification else width)
        return total

    def _row_size(self, name: str) -> tuple[int | None, int, bool]:
        """An output's elements per row (None: BYTES, or a size only the run tells), its binary
        item size, and whether it has a batch axis."""
        meta, axis = self._outputs[name], self.pipelines[0].batch_axes.get(name, 0)
        dims = [d for j, d in enumerate(meta.shape) if j != axis]
        if meta.datatype == "BYTES" or any(d < 0 for d in dims):
            return None, 0, False
        return int(np.prod(dims, dtype=np.int64)), DATATYPES[meta.datatype].itemsize, axis is not None

    async def infer(self, request: InferRequest, started: float) -> Answer:
        """Check, batch and run one request. Raises InfernoError subclasses for the caller to map."""
        try:
            work = self.pipelines[0].prepare(request)
            if self.monitor is not None:
                problems = self.monitor.reject(work.payload)
                if problems:
                    raise UserInputError(problems[0])
            if work.rows > self.max_batch_size:
                raise UserInputError(
                    f"request batch: expected at most {self.max_batch_size} rows "
                    f"(max_batch_size of {self.name!r}), got {work.rows}"
                )
            if self.response_limit is not None:
                floor = self._response_floor(work)
                if floor > self.response_limit:
                    raise UserInputError(
                        f"response: expected at most {self.response_limit} bytes (the server's "
                        f"max_response_bytes), this request asks for at least {floor} ({work.rows} rows of "
                        f"{[o.name for o in work.outputs]}); ask for fewer rows or outputs")
            key = None
            if self.cache is not None:
                t0 = time.perf_counter()
                key = cache_key(self.name, self.version, request)
                cached = self.cache.get(key)
                self.stats.cache_lookup(cached is not None, time.perf_counter() - t0, work.rows)
                if cached is not None:
                    return respond(work, cached)
            timeout = self.config.timeout_s
            if request.timeout_us is not None:
                timeout = min(timeout, request.timeout_us / 1e6)
            outputs = await self.batcher.submit(work, work.rows, time.monotonic() + timeout)
            self._check(work, outputs)
            if key is not None and self.cache is not None:
                self.cache.put(key, outputs)
            return respond(work, outputs)
        except InfernoError as exc:
            reason = "rejected" if exc.http_status < 500 or exc.http_status == 503 else "timeout"
            self.stats.request_failed(time.perf_counter() - started, reason)
            raise
        except Exception:
            self.stats.request_failed(time.perf_counter() - started, "backend")
            raise

    def _check(self, work: Work, outputs: Outputs) -> None:
        """Every output has the request's rows on its batch axis (outputs without one: any shape)."""
        axes = self.pipelines[0].batch_axes
        for name, array in outputs.items():
            axis = axes.get(name, 0)
            if axis is None:
                continue
            if array.ndim <= axis or array.shape[axis] != work.rows:
                raise RuntimeError(f"output {name!r} of shape {list(array.shape)} does not have the "
                                   f"request's {work.rows} rows on axis {axis}")

    def metadata(self, versions: list[str]) -> dict[str, Any]:
        pipeline = self.pipelines[0]
        return {
            "name": self.name,
            "versions": versions,
            "platform": _PLATFORMS.get(self.plan.runtime, self.plan.runtime),
            "inputs": [t.to_dict() for t in pipeline.inputs],
            "outputs": [t.to_dict() for t in pipeline.outputs],
            "parameters": {
                "runtime": self.plan.runtime, "provider": self.provider, "variant": self.plan.variant,
                # precision as accelerate's table says it (what the graph holds: int8 for an
                # NNCF model), beside the float precision the runtime computes in
                "precision": self.plan.graph_precision, "compute_precision": self.plan.compute_precision,
                "task": self.plan.task,
            },
        }

    def model_config(self) -> dict[str, Any]:
        """Triton's model configuration shape, for clients that ask for it.

        As Triton: a model that batches on axis 0 of every tensor has ``max_batch_size`` > 0
        and ``dims`` without that axis; any other model (a batch on another axis, state
        tensors, no batch at all) has ``max_batch_size`` 0 and full ``dims``, ``-1`` where a
        size is free, and no ``dynamic_batching`` (requests may still share a runtime call,
        along each tensor's own batch axis: that is inferno's business, not the client's).
        """
        pipeline = self.pipelines[0]
        c = self.config
        batching = pipeline.batch_first

        def tensors(metas: Any) -> list[dict[str, Any]]:
            return [{"name": t.name, "data_type": config_type(t.datatype),
                     "dims": list(t.shape[1:] if batching else t.shape)} for t in metas]

        config: dict[str, Any] = {
            "name": self.name,
            "platform": _PLATFORMS.get(self.plan.runtime, self.plan.runtime),
            "max_batch_size": self.max_batch_size if batching else 0,
            "input": tensors(pipeline.inputs),
            "output": tensors(pipeline.outputs),
        }
        if batching:
            config["dynamic_batching"] = {"max_queue_delay_microseconds": c.max_queue_delay_us,
                                          "default_queue_policy": {"max_queue_size": c.max_queue_size}}
        config["instance_group"] = [{"count": c.instances,
                                     "kind": "KIND_GPU" if pipeline.runner.device == "cuda" else "KIND_CPU"}]
        config["response_cache"] = {"enable": c.cache_bytes > 0}
        return config

    async def close(self) -> None:
        """Finish every accepted request, then free the runtime sessions."""
        self.ready = False
        await self.batcher.close()
        if self.monitor is not None:
            await asyncio.to_thread(self.monitor.close)
        for p in self.pipelines:
            p.close()


def _monitor(served: ServedVersion, metrics: ServingMetrics,
             prediction_log: PredictionLog | None) -> Monitor | None:
    """The version's monitor, when it has a reference profile and something to watch."""
    c = served.config
    if not c.drift and c.validation == "off" and prediction_log is None:
        return None
    profile = ReferenceProfile.load(served.folder)
    if profile is None:
        log.info("%s version %s has no reference profile (%s): drift and validation are off; "
                 "`inferno accelerate` writes one", served.name, served.version, PROFILE_FILE)
        return None
    settings = MonitorSettings.served(c)
    tokenize = None
    text = served.pipelines[0].runner.preprocessor
    if isinstance(text, TextPreprocessor):
        # its own tokenizer: the monitor thread must not share the batch worker's
        tokenize = TextPreprocessor(text.tokenizer_path, text.max_length, text.input_names).encodings
    return Monitor(served.name, served.version, profile, settings, tokenize=tokenize,
                   sink=metrics.monitor_sink(served.name, served.version), prediction_log=prediction_log)


def _watched(pipeline: Pipeline, monitor: Monitor) -> Callable[[list[Work]], list[Outputs]]:
    """``pipeline.execute``, with every batch handed to the monitor as samples (rows first, as
    the reference profile was made: a graph-layout state [2, batch, 128] is moved)."""
    signature = pipeline.runner.signature
    axes = (None if not isinstance(pipeline, TensorPipeline) or signature.batch_first
            else {s.name: s.batch_axis for s in (*signature.inputs, *signature.outputs)})

    def samples(tensors: dict[str, Any], rows: int) -> dict[str, Any]:
        if axes is None or not isinstance(tensors, dict):
            return tensors
        return {n: as_rows(np.asarray(a), axes.get(n, 0), rows) for n, a in tensors.items()}

    def run(works: list[Work]) -> list[Outputs]:
        outputs = pipeline.execute(works)
        monitor.observe([samples(w.payload, w.rows) for w in works],
                        [samples(o, w.rows) for w, o in zip(works, outputs, strict=True)])
        return outputs

    return run


@dataclass
class _Entry:
    versions: dict[int, Served]
    state: str
    reason: str = ""
    failed: bool = False
    """The last load failed (``reason`` says why); an unloaded model is not failed."""
    attached: bool = False
    """Served from an object its caller made, not from the repository: never loaded or unloaded."""


class ModelManager:
    """The models of one repository: load, unload, hot swap, lookup."""

    def __init__(self, config: ServeConfig, metrics: ServingMetrics, runners: RunnerFactory = local_runners) -> None:
        self.config = config
        self.metrics = metrics
        self.runners = runners
        """How a version's runners are made: here, or on Ray replicas (``inferno.distributed``)."""
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.prediction_log = (PredictionLog(config.log_predictions, config.log_max_bytes)
                               if config.log_predictions is not None else None)

    def get(self, name: str, version: str | None = None) -> Served:
        """The version to serve (the newest loaded when ``version`` is None); 404s otherwise."""
        entry = self._entries.get(name)
        if entry is not None and not entry.versions and entry.failed:
            raise ModelUnavailableError(
                f"model {name!r} is UNAVAILABLE: loading it failed: {entry.reason}; retrying will not help "
                "until its files are fixed and it is loaded again (POST /v2/repository/models/"
                f"{name}/load)")
        if entry is not None and not entry.versions and entry.state == "LOADING":
            raise ServiceUnavailableError(f"model {name!r} is LOADING: retry shortly", retry_after_s=1.0)
        if entry is None or not entry.versions:
            known = sorted(n for n, e in self._entries.items() if e.versions)
            raise UnknownModelError(f"model {name!r}: not loaded; loaded models: {known}")
        if version is None or version == "":
            return entry.versions[max(entry.versions)]
        if not CANONICAL_VERSION.fullmatch(version):
            raise UnknownModelError(f"model {name!r} version {version!r}: expected a version number "
                                    "(digits, no leading zero)")
        try:
            served = entry.versions[int(version)]
        except (ValueError, KeyError):
            why = f" (the last load failed: {entry.reason})" if entry.failed else ""
            raise UnknownModelError(
                f"model {name!r} version {version!r}: not loaded{why}; loaded versions: {sorted(entry.versions)}"
            ) from None
        return served

    def attach(self, served: Served) -> None:
        """Serve ``served`` beside the repository's models until the manager closes (the
        cascade: a model the repository does not hold, so it is never loaded or unloaded).

        Raises:
            ConfigError: a model of that name is already served.
        """
        repository.check_name(served.name)
        if served.name in self._entries:
            raise ConfigError(f"model {served.name!r}: expected one model of that name, got a second one")
        self._entries[served.name] = _Entry({int(served.version): served}, "READY", attached=True)

    def _check_not_attached(self, name: str) -> None:
        entry = self._entries.get(name)
        if entry is not None and entry.attached:
            raise UserInputError(f"model {name!r}: expected a repository model, got one attached by the process "
                                 "that started this server (it cannot be loaded or unloaded)")

    def loaded(self) -> dict[str, list[str]]:
        return {n: [str(v) for v in sorted(e.versions)] for n, e in self._entries.items() if e.versions}

    async def load(self, name: str) -> None:
        """Load (or reload) ``name``: new versions are built and warmed before they replace old ones."""
        repository.check_name(name)
        self._check_not_attached(name)
        available = repository.versions(self.config.repository, name, trust=self.config.trust)
        if not available:
            raise UnknownModelError(
                f"model {name!r}: no version in the repository "
                f"(it holds {sorted(repository.models(self.config.repository, trust=self.config.trust))})"
            )
        wanted = available[-1:] if self.config.versions == "latest" else available
        async with self._locks.setdefault(name, asyncio.Lock()):
            entry = self._entries.setdefault(name, _Entry({}, "LOADING"))
            settings = self.config.for_model(name)
            fresh: dict[int, ServedVersion] = {}
            try:
                for v in wanted:
                    if v in entry.versions and entry.versions[v].config == settings:
                        continue
                    folder = self.config.repository / name / str(v)  # listed by versions() above
                    log.info("loading %s version %s from %s", name, v, folder)
                    fresh[v] = await asyncio.to_thread(
                        functools.partial(ServedVersion.build, trust=self.config.trust,
                                          response_limit=self.config.response_limit, runners=self.runners),
                        name, v, folder, settings, self.metrics, self.prediction_log,
                    )
            except Exception as exc:
                await _close_all(fresh.values())
                entry.state, entry.reason = ("READY" if entry.versions else "UNAVAILABLE"), str(exc).strip()
                entry.failed = True
                if isinstance(exc, InfernoError) and not isinstance(exc, ServiceUnavailableError):
                    raise
                # the same files fail the same way on a retry: not a 503 with Retry-After
                raise ModelLoadError(f"model {name!r}: loading failed: {str(exc).strip()}") from exc
            for served in fresh.values():
                served.start()
            replaced = [s for v, s in entry.versions.items() if v in fresh or v not in wanted]
            # one assignment publishes the new set; handlers never see a half-built one
            entry.versions = {**{v: s for v, s in entry.versions.items() if v in wanted}, **fresh}
            entry.state, entry.reason, entry.failed = "READY", "", False
            await self._retire(replaced)

    async def unload(self, name: str) -> None:
        self._check_not_attached(name)
        entry = self._entries.get(name)
        if entry is None:
            raise UnknownModelError(f"model {name!r}: not loaded; loaded models: {sorted(self.loaded())}")
        async with self._locks.setdefault(name, asyncio.Lock()):
            old = list(entry.versions.values())
            entry.versions = {}
            entry.state, entry.reason, entry.failed = "UNAVAILABLE", "unloaded", False
            await self._retire(old)

    async def _retire(self, versions: list[Served]) -> None:
        for served in versions:
            served.ready = False
        await _close_all(versions)
        for served in versions:
            entry = self._entries.get(served.name)
            if entry is None or int(served.version) not in entry.versions:  # not rebuilt under its number
                self.metrics.forget(served.name, served.version)

    def index(self) -> list[dict[str, Any]]:
        """Triton's repository index: every model on disk, with its state."""
        rows = []
        on_disk = repository.models(self.config.repository, trust=self.config.trust)
        for name in sorted(set(on_disk) | set(self._entries)):
            entry = self._entries.get(name)
            loaded = entry.versions if entry else {}
            for v in on_disk.get(name, []) or sorted(loaded):
                if v in loaded:
                    rows.append({"name": name, "version": str(v), "state": "READY", "reason": ""})
                elif entry is not None and entry.state == "LOADING":
                    rows.append({"name": name, "version": str(v), "state": "LOADING", "reason": ""})
                else:
                    reason = entry.reason if entry is not None else ""
                    rows.append({"name": name, "version": str(v), "state": "UNAVAILABLE", "reason": reason})
        return rows

    async def close(self) -> None:
        for name in list(self._entries):
            entry = self._entries[name]
            old = list(entry.versions.values())
            entry.versions = {}
            await self._retire(old)
        if self.prediction_log is not None:
            self.prediction_log.close()


async def _close_all(versions: Any) -> None:
    for served in versions:
        await served.close()
