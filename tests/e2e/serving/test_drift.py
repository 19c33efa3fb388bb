"""Drift monitoring and data validation through a real server, on real models and real data.

The streams go through ``tritonclient`` one request per row, as live traffic would. Between
requests the test waits for the monitor thread (``flush``) so that "the first alarm" is
counted in requests, not in how fast the monitor thread happened to run.

digits: the reference profile is built on the training split; the in-distribution stream
draws held-out test images. minilm: the reference is the 260 bundled sentences; the streams
are sentences written for these tests (tests/data/drift).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from inferno.models.zoo import digits
from tests.e2e.serving.support import Server, digits_inputs, running, text_inputs

DATA = Path(__file__).resolve().parents[2] / "data" / "drift"
SHIFT_WITHIN = 500
WINDOW = 750  # the server's default


@pytest.fixture(scope="module")
def split() -> tuple[np.ndarray, np.ndarray]:
    _, _, x_test, y_test = digits.load_split()
    return x_test, y_test


@pytest.fixture(scope="module")
def digits_repo(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("drift") / "repo"
    shutil.copytree(model_repository / "digits", repo / "digits")
    return repo


@pytest.fixture
def digits_server(digits_repo: Path) -> Iterator[Server]:
    """A fresh server (so a fresh window) per test; checks counted in rows, not seconds."""
    with running(digits_repo, drift_check_interval_s=0) as server:
        yield server


def _drift(server: Server, model: str) -> dict:
    response = server.request("GET", f"/v2/models/{model}/drift")
    assert response.status == 200, response.body
    return response.json()


def _stream(server: Server, model: str, rows: Iterator[Callable[[], list]], count: int,
            check_every: int = 10) -> int | None:
    """Send ``count`` one-row requests; the request number of the first drift verdict, or None."""
    client = server.client()
    monitor = server.manager.get(model).monitor
    assert monitor is not None
    for i in range(1, count + 1):
        client.infer(model, next(rows)())
        if i % check_every == 0:
            assert monitor.flush()
            if monitor.drifted:
                return i
    return None


def _images(x: np.ndarray, seed: int, weights: np.ndarray | None = None,
            change: Callable[[np.ndarray], np.ndarray] = lambda a: a) -> Iterator[Callable[[], list]]:
    rng = np.random.default_rng(seed)
    p = None if weights is None else weights / weights.sum()
    while True:
        image = change(x[rng.choice(len(x), p=p)][None])
        yield lambda image=image: digits_inputs(image.astype(np.float32))


def test_digits_in_distribution_raises_no_alarm(digits_server: Server, split: tuple) -> None:
    x_test, _ = split
    first = _stream(digits_server, "digits", _images(x_test, seed=0), 2000, check_every=50)
    doc = _drift(digits_server, "digits")
    assert first is None, doc
    assert doc["observed_rows"] == 2000 and doc["window_filled"] == WINDOW
    assert doc["checked_at"] is not None and not doc["drifted"]
    assert all(f["score"] is not None for f in doc["features"])


@pytest.mark.parametrize(("scenario", "change", "imbalanced"), [
    ("inverted", lambda a: 1.0 - a, False),
    ("brightness", lambda a: np.clip(a + 0.2, 0.0, 1.0), False),
    ("class-imbalanced", lambda a: a, True),
])
def test_digits_shift_raises_alarm_within_500(digits_server: Server, split: tuple, scenario: str,
                                              change: Callable, imbalanced: bool) -> None:
    x_test, y_test = split
    assert _stream(digits_server, "digits", _images(x_test, seed=1), WINDOW, check_every=50) is None
    weights = np.where(y_test == 1, 10.0, 1.0) if imbalanced else None  # class 1: ~53% of requests
    first = _stream(digits_server, "digits", _images(x_test, 2, weights, change), SHIFT_WITHIN)
    doc = _drift(digits_server, "digits")
    assert first is not None, f"{scenario}: no alarm within {SHIFT_WITHIN} requests: {doc}"
    assert doc["drifted"] and doc["share"] >= doc["drift_share"]
    drifted = {f["name"] for f in doc["features"] if f["drifted"]}
    if imbalanced:
        assert "class" in drifted, doc


def test_drift_shows_in_metrics_and_clears(digits_server: Server, split: tuple) -> None:
    x_test, _ = split
    _stream(digits_server, "digits", _images(x_test, seed=3), WINDOW, check_every=WINDOW)
    assert _stream(digits_server, "digits", _images(x_test, 4, change=lambda a: 1.0 - a), 300) is not None
    metrics = digits_server.metrics()
    assert metrics['inferno_drift_detected{model="digits",version="1"}'] == 1.0
    score = metrics['inferno_drift_score{feature="pixels.mean",model="digits",version="1"}']
    threshold = metrics['inferno_drift_threshold{feature="pixels.mean",model="digits",version="1"}']
    assert score > threshold
    since = _drift(digits_server, "digits")["since"]
    # back to normal traffic: a full window of it clears the verdict
    monitor = digits_server.manager.get("digits").monitor
    _stream(digits_server, "digits", _images(x_test, seed=5), WINDOW + 100, check_every=WINDOW + 100)
    assert monitor is not None and monitor.flush()
    doc = _drift(digits_server, "digits")
    assert not doc["drifted"] and doc["since"] >= since
    assert digits_server.metrics()['inferno_drift_detected{model="digits",version="1"}'] == 0.0


@pytest.fixture(scope="module")
def minilm_repo(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """minilm with a window of 200 rows: the in-domain test set holds 200 fresh sentences, and
    resampling them into a larger window would repeat sentences, which the KS tests (the
    reference is small: 260 sentences) would take for independent evidence."""
    repo = tmp_path_factory.mktemp("drift-minilm") / "repo"
    shutil.copytree(model_repository / "minilm", repo / "minilm")
    (repo / "minilm" / "serve.json").write_text(json.dumps({"drift_window": 200, "drift_check_every": 10, "drift_check_interval_s": 0}))
    return repo


def _sentences(lines: list[str], seed: int) -> Iterator[Callable[[], list]]:
    rng = np.random.default_rng(seed)
    while True:
        for i in rng.permutation(len(lines)):
            yield lambda s=lines[i]: text_inputs([s])


def test_minilm_in_domain_no_alarm_other_domain_alarm(minilm_repo: Path) -> None:
    in_domain = (DATA / "in_domain.txt").read_text("utf-8").splitlines()
    other = (DATA / "other_domain.txt").read_text("utf-8").splitlines()
    with running(minilm_repo) as server:
        assert _stream(server, "minilm", _sentences(in_domain, 0), len(in_domain)) is None
        doc = _drift(server, "minilm")
        assert doc["window_size"] == 200 and doc["checked_at"] is not None and not doc["drifted"], doc
        methods = {f["name"]: f["method"] for f in doc["features"]}
        assert methods["tokens.length"] == "ks" and methods["embedding.pc1"] == "ks"  # a small reference
        first = _stream(server, "minilm", _sentences(other, 1), SHIFT_WITHIN)
        assert first is not None, _drift(server, "minilm")


def test_validation_counts_by_default(digits_server: Server) -> None:
    client = digits_server.client()
    bad = np.full((1, 1, 8, 8), 0.5, np.float32)
    bad[0, 0, 2, 3] = 7.0
    client.infer("digits", digits_inputs(bad))
    bad[0, 0, 0, 0] = np.nan
    # JSON has no NaN: in and out in binary. Counted, still answered
    answer = client.infer("digits", digits_inputs(bad, binary=True),
                          outputs=[httpclient.InferRequestedOutput("probabilities", binary_data=True)])
    assert np.isnan(answer.as_numpy("probabilities")).any()
    monitor = digits_server.manager.get("digits").monitor
    assert monitor is not None and monitor.flush()
    metrics = digits_server.metrics()
    key = 'inferno_validation_failures_total{input="pixels",model="digits",reason="%s",version="1"}'
    assert metrics[key % "out_of_range"] >= 2 and metrics[key % "nan"] >= 1
    assert _drift(digits_server, "digits")["validation"]["failures"]["pixels"]["nan"] >= 1


def test_validation_rejects_with_400_naming_input_rule_value(model_repository: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(model_repository / "digits", repo / "digits")
    shutil.copytree(model_repository / "minilm", repo / "minilm")
    with running(repo, validation="reject") as server:
        headers = {"Content-Type": "application/json"}
        pixels = np.full(64, 0.5)
        pixels[10] = 3.5
        body = {"inputs": [{"name": "pixels", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": pixels.tolist()}]}
        response = server.request("POST", "/v2/models/digits/infer", json.dumps(body), headers)
        assert response.status == 400
        error = response.error()
        assert "'pixels'" in error and "out_of_range" in error and "3.5" in error and "[0, 1]" in error
        text = {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["fine", "snow \u2603"]}]}
        response = server.request("POST", "/v2/models/minilm/infer", json.dumps(text), headers)
        assert response.status == 400
        assert "unknown_token" in response.error() and "\u2603" in response.error()
        ok = {"inputs": [{"name": "pixels", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.25] * 64}]}
        assert server.request("POST", "/v2/models/digits/infer", json.dumps(ok), headers).status == 200
        metrics = server.metrics()
        assert metrics['inferno_validation_failures_total{input="pixels",model="digits",'
                       'reason="out_of_range",version="1"}'] == 1.0


def test_drift_endpoint_404_without_profile_and_when_off(model_repository: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(model_repository / "digits", repo / "digits")
    (repo / "digits" / "1" / "profile.json").unlink()  # a version written before profiles existed
    with running(repo) as server:
        response = server.request("GET", "/v2/models/digits/drift")
        assert response.status == 404 and "profile.json" in response.error()
        assert server.request("GET", "/v2/models/nope/drift").status == 404
        assert server.client().infer("digits", digits_inputs(np.zeros((1, 1, 8, 8), np.float32)))
    shutil.copy(model_repository / "digits" / "1" / "profile.json", repo / "digits" / "1" / "profile.json")
    with running(repo, drift=False) as server:
        response = server.request("GET", "/v2/models/digits/versions/1/drift")
        assert response.status == 404 and "drift: false" in response.error()


def test_prediction_log_writes_summaries_and_outputs(model_repository: Path, tmp_path: Path,
                                                     split: tuple) -> None:
    from inferno.serving import ModelServeConfig, ServeConfig, ServerThread

    repo = tmp_path / "repo"
    shutil.copytree(model_repository / "digits", repo / "digits")
    logs = tmp_path / "predictions"
    config = ServeConfig(repository=repo, port=0, log_predictions=logs, log_max_bytes=2**20,
                         defaults=ModelServeConfig())
    thread = ServerThread(config)
    with thread:
        server = Server(thread)
        server.client().infer("digits", digits_inputs(split[0][:3]))
        monitor = server.manager.get("digits").monitor
        assert monitor is not None and monitor.flush()
    records = [json.loads(line) for f in sorted(logs.glob("predictions-*.jsonl")) for line in f.read_text().splitlines()]
    assert len(records) == 3
    assert {r["model"] for r in records} == {"digits"}
    assert set(records[0]["features"]) == {"pixels.mean", "pixels.std", "class", "confidence"}
    probabilities = np.array([r["outputs"]["probabilities"] for r in records])
    assert probabilities.shape == (3, 10) and np.allclose(probabilities.sum(1), 1.0, atol=1e-4)
    assert [r["features"]["class"] for r in records] == probabilities.argmax(1).tolist()


def test_inferno_monitor_once_reads_the_live_server(digits_server: Server,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from inferno.cli import main

    main(["monitor", digits_server.url, "--once", "--json"])
    docs = json.loads(capsys.readouterr().out)
    assert [d["model"] for d in docs] == ["digits"]
    assert {f["name"] for f in docs[0]["features"]} == {"pixels.mean", "pixels.std", "class", "confidence"}
