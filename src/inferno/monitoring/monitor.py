"""The watch over one served model version: drift, validation counts and the prediction log.

The batch worker hands each finished batch to :meth:`Monitor.observe`, which only appends
to a bounded queue (a full queue drops the batch and counts it). A thread of the monitor
summarizes the batches, updates the drift window, checks the verdict every few rows, counts
validation failures and writes the prediction log — all off the request path, in the same
process, with memory bounded by the window and the queue.
"""

from __future__ import annotations

import collections
import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from inferno.monitoring.drift import DriftDetector, DriftSettings, Method, Verdict
from inferno.monitoring.predlog import PredictionLog
from inferno.monitoring.profile import ReferenceProfile, Summarizer, Tokenize
from inferno.monitoring.validation import Mode, Validator

log = logging.getLogger(__name__)

QUEUE_BATCHES = 1024


class MonitorSink(Protocol):
    """Where the monitor reports (the server's Prometheus metrics)."""

    def drift(self, verdict: Verdict) -> None: ...

    def validation_failure(self, input_name: str, reason: str) -> None: ...


class ServedSettings(Protocol):
    """What a served model's settings say about its monitor: ``ModelServeConfig`` (``serve.json``,
    ``inferno serve``'s flags), where each field is defined and documented once."""

    @property
    def drift(self) -> bool: ...
    @property
    def drift_window(self) -> int: ...
    @property
    def drift_check_every(self) -> int: ...
    @property
    def drift_check_interval_s(self) -> float: ...
    @property
    def drift_share(self) -> float: ...
    @property
    def drift_method(self) -> Method: ...
    @property
    def drift_threshold(self) -> float | None: ...
    @property
    def validation(self) -> Mode: ...
    @property
    def validation_margin(self) -> float: ...


@dataclass(frozen=True)
class MonitorSettings:
    drift: DriftSettings | None = field(default_factory=DriftSettings)
    """None: validation only, no drift window."""
    validation: Mode = "count"
    margin: float = 0.0

    @classmethod
    def served(cls, config: ServedSettings) -> MonitorSettings:
        """The monitor of a served version, as its settings ask: the only place their
        ``drift_*`` and ``validation*`` fields are read (the window fills before the first check)."""
        drift = DriftSettings(
            window=config.drift_window, min_rows=config.drift_window, check_every=config.drift_check_every,
            check_interval_s=config.drift_check_interval_s, drift_share=config.drift_share,
            method=config.drift_method, threshold=config.drift_threshold,
        )
        return cls(drift if config.drift else None, config.validation, config.validation_margin)


def _merged(payloads: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray] | None:
    """The requests of a batch as one array per input; None when their shapes differ."""
    if len(payloads) == 1:
        return payloads[0]
    try:
        return {k: np.concatenate([p[k] for p in payloads]) for k in payloads[0]}
    except (ValueError, KeyError):
        return None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Monitor:
    """Drift detection and validation counts for one model version, in its own thread."""

    def __init__(self, model: str, version: str, profile: ReferenceProfile,
                 settings: MonitorSettings | None = None, *, tokenize: Tokenize | None = None,
                 sink: MonitorSink | None = None, prediction_log: PredictionLog | None = None) -> None:
        self.model, self.version = model, version
        self.profile = profile
        self.settings = settings or MonitorSettings()
        self.tokenize = tokenize
        self.summarize = Summarizer(profile, tokenize)
        self.validator = Validator(profile, tokenize, margin=self.settings.margin)
        self.detector = DriftDetector(profile, self.settings.drift) if self.settings.drift else None
        self.sink = sink
        self.prediction_log = prediction_log
        self.verdict: Verdict | None = None
        self.drifted = False
        self.since = _now()
        self.checked_at: str | None = None
        self.dropped = 0
        self.failures: dict[str, dict[str, int]] = {}
        self._pending: collections.deque[tuple[list[Any], list[dict[str, np.ndarray]]] | threading.Event] = (
            collections.deque())
        self._wake = threading.Event()
        self._stop = False
        self._lock = threading.Lock()  # guards what document() reads
        self._thread = threading.Thread(target=self._loop, name=f"monitor-{model}-{version}", daemon=True)
        self._thread.start()

    def observe(self, payloads: list[Any], outputs: list[dict[str, np.ndarray]]) -> None:
        """Queue one finished batch (called by the batch worker: never blocks)."""
        if self._stop:
            return
        if len(self._pending) >= QUEUE_BATCHES:
            self.dropped += 1
            return
        self._pending.append((payloads, outputs))
        self._wake.set()

    def reject(self, payload: Any) -> list[str]:
        """Validation messages for one request when the mode is ``reject`` (request path)."""
        if self.settings.validation != "reject":
            return []
        failures = self.validator.check(payload)
        for f in failures:
            self._count(f.input, f.reason)
        return [f.message() for f in failures]

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued batch is processed (tests and benchmarks)."""
        if not self._thread.is_alive():
            return False
        done = threading.Event()
        self._pending.append(done)  # processed in order: set once everything before it is done
        self._wake.set()
        return done.wait(timeout)

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while True:
            self._wake.wait(0.5)
            self._wake.clear()
            while self._pending:
                item = self._pending.popleft()
                if isinstance(item, threading.Event):
                    item.set()
                    continue
                try:
                    self._process(*item)
                except Exception:  # a monitoring bug must never take serving down
                    log.exception("monitor %s v%s: a batch could not be processed", self.model, self.version)
            if self._stop and not self._pending:
                return

    def _process(self, payloads: list[Any], outputs: list[dict[str, np.ndarray]]) -> None:
        name = self.profile.output
        if self.profile.input_kind == "text":
            texts = [t for p in payloads for t in p]
            encodings = self.tokenize(texts) if self.tokenize else None
            rows = self.summarize(texts, np.concatenate([o[name] for o in outputs]), encodings)
            if self.settings.validation == "count" and encodings is not None:
                start = 0
                for p in payloads:
                    for f in self.validator.text(encodings[start:start + len(p)]):
                        self._count(f.input, f.reason)
                    start += len(p)
        else:
            merged = _merged(payloads)
            if merged is not None:  # one vectorized pass over the batch: the common case
                rows = self.summarize(merged, np.concatenate([o[name] for o in outputs]))
            else:
                rows = np.concatenate([self.summarize(p, o[name]) for p, o in zip(payloads, outputs, strict=True)])
            if self.settings.validation == "count" and (merged is None or self.validator.tensors(merged)):
                for p in payloads:  # count per request, only when something failed
                    for f in self.validator.tensors(p):
                        self._count(f.input, f.reason)
        if self.prediction_log is not None:
            self._log(rows, outputs)
        if self.detector is not None and self.detector.update(rows):
            self._check(self.detector)

    def _check(self, detector: DriftDetector) -> None:
        verdict = detector.evaluate()
        with self._lock:
            self.verdict = verdict
            self.checked_at = _now()
            changed = verdict.drifted != self.drifted
            if changed:
                self.drifted = verdict.drifted
                self.since = self.checked_at
        if changed:
            drifted = [s.name for s in verdict.features if s.drifted]
            if verdict.drifted:
                log.warning("drift detected on %s v%s: %d of %d features drifted (%s)", self.model, self.version,
                            len(drifted), len(verdict.features), ", ".join(drifted))
            else:
                log.warning("drift cleared on %s v%s: %d of %d features drifted", self.model, self.version,
                            len(drifted), len(verdict.features))
        if self.sink is not None:
            self.sink.drift(verdict)

    def _count(self, input_name: str, reason: str) -> None:
        with self._lock:
            by_reason = self.failures.setdefault(input_name, {})
            by_reason[reason] = by_reason.get(reason, 0) + 1
        if self.sink is not None:
            self.sink.validation_failure(input_name, reason)

    def _log(self, rows: np.ndarray, outputs: list[dict[str, np.ndarray]]) -> None:
        if self.prediction_log is None:
            return
        time = _now()
        names = self.summarize.names
        records = []
        r = 0
        for out in outputs:
            n = len(next(iter(out.values())))
            for i in range(n):
                records.append({
                    "time": time, "model": self.model, "version": self.version,
                    "features": dict(zip(names, rows[r].tolist(), strict=True)),
                    "outputs": {k: np.asarray(v[i]).tolist() for k, v in out.items()},
                })
                r += 1
        self.prediction_log.write(records)

    def document(self) -> dict[str, Any] | None:
        """The drift endpoint's answer (None when drift is not watched)."""
        d = self.detector
        if d is None:
            return None
        with self._lock:
            verdict = self.verdict
            doc = {
                "model": self.model, "version": self.version,
                "window_size": d.settings.window, "window_filled": d.filled, "observed_rows": d.observed,
                "reference_samples": self.profile.samples, "drift_share": d.settings.drift_share,
                "drifted": self.drifted, "share": verdict.share if verdict else 0.0,
                "since": self.since, "checked_at": self.checked_at,
                "dropped_batches": self.dropped,
                "validation": {"mode": self.settings.validation,
                               "failures": {k: dict(v) for k, v in self.failures.items()}},
            }
        if verdict is not None:
            doc["features"] = [s.to_dict() for s in verdict.features]
        else:
            doc["features"] = [{"name": f.name, "kind": f.kind, "method": m, "score": None, "threshold": None,
                                "drifted": False, "p_value": None}
                               for f, m in zip(d.features, d.methods, strict=True)]
        return doc

