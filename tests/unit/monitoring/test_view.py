"""``inferno monitor`` against a small real HTTP server on loopback serving canned drift documents."""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from inferno.cli import main
from inferno.errors import ConfigError, UserInputError
from inferno.monitoring.poller import Drift, Poller, Snapshot, make_config, select
from inferno.monitoring.view import MAX_POLLS, History, drift_spans, plot, table, view

TOKEN = "s3cret"
PNG = b"\x89PNG\r\n\x1a\n"

DRIFTED = {
    "model": "digits",
    "version": "1",
    "window_size": 500,
    "window_filled": 312,
    "observed_rows": 2040,
    "reference_samples": 1437,
    "drift_share": 0.5,
    "drifted": True,
    "share": 0.67,
    "since": "2026-11-22T10:00:00+00:00",
    "checked_at": "2026-11-22T10:03:12+00:00",
    "features": [
        {
            "name": "pixels.mean",
            "kind": "numeric",
            "method": "ks",
            "score": 0.081,
            "threshold": 0.086,
            "drifted": False,
            "p_value": 0.07,
        },
        {
            "name": "class",
            "kind": "categorical",
            "method": "chi2",
            "score": 31.2,
            "threshold": 16.9,
            "drifted": True,
            "p_value": 0.0003,
        },
        {
            "name": "confidence",
            "kind": "numeric",
            "method": "jensenshannon",
            "score": 0.2,
            "threshold": 0.1,
            "drifted": True,
            "p_value": None,
        },
    ],
    "validation": {"mode": "count", "failures": {"pixels": {"nan": 0, "out_of_range": 3}}},
}
FRESH = {  # loaded a moment ago: the window has not filled, nothing checked yet
    "model": "fresh",
    "version": "2",
    "window_size": 100,
    "window_filled": 7,
    "observed_rows": 7,
    "reference_samples": 50,
    "drift_share": 0.5,
    "drifted": False,
    "share": 0.0,
    "since": "2026-11-22T10:00:00+00:00",
    "checked_at": None,
    "features": [
        {
            "name": "embedding.norm",
            "kind": "numeric",
            "method": "wasserstein",
            "score": None,
            "threshold": None,
            "drifted": False,
            "p_value": None,
        }
    ],
    "validation": {"mode": "count", "failures": {}},
}
INDEX = [
    {"name": "digits", "version": "1", "state": "READY", "reason": ""},
    {"name": "fresh", "version": "2", "state": "READY", "reason": ""},
    {"name": "minilm", "version": "1", "state": "READY", "reason": ""},  # no profile: 404
    {"name": "broken", "version": "1", "state": "UNAVAILABLE", "reason": "load failed"},
]


@dataclass
class Canned:
    """What the fake server holds; tests change it between polls."""

    token: str | None = None
    documents: dict[tuple[str, str], dict[str, Any]] = field(
        default_factory=lambda: {
            ("digits", "1"): copy.deepcopy(DRIFTED),
            ("fresh", "2"): copy.deepcopy(FRESH),
        }
    )
    redirect_to: str | None = None
    paths: list[str] = field(default_factory=list)


@dataclass
class Server:
    url: str
    canned: Canned
    stop: Any


def _handler(canned: Canned) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def _authorized(self) -> bool:
            canned.paths.append(self.path)
            if canned.token and self.headers.get("Authorization") != f"Bearer {canned.token}":
                self._send(401, {"error": "missing or wrong bearer token"})
                return False
            return True

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if not self._authorized():
                return
            if self.path != "/v2/repository/index":
                self._send(404, {"error": "no such endpoint"})
                return
            self._send(200, INDEX)

        def do_GET(self) -> None:
            if not self._authorized():
                return
            parts = self.path.strip("/").split("/")
            if len(parts) != 6 or parts[:2] != ["v2", "models"] or parts[5] != "drift":
                self._send(404, {"error": "no such endpoint"})
                return
            if canned.redirect_to:
                self._send(307, {}, {"Location": canned.redirect_to + self.path})
                return
            doc = canned.documents.get((parts[2], parts[4]))
            if doc is None:
                self._send(404, {"error": f"model {parts[2]!r} has no reference profile"})
                return
            self._send(200, doc)

    return Handler


def _start(canned: Canned) -> Server:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(canned))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()

    def stop() -> None:
        httpd.shutdown()
        httpd.server_close()
        thread.join()

    return Server(f"http://127.0.0.1:{httpd.server_address[1]}", canned, stop)


@pytest.fixture
def server() -> Iterator[Server]:
    started = _start(Canned())
    yield started
    started.stop()


@pytest.fixture
def closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # bound then closed: nothing listens there


def _text(renderable: Any) -> str:
    console = Console(record=True, width=160)
    console.print(renderable)
    return console.export_text()


# -- polling -----------------------------------------------------------------------------------


def test_poll_parses_documents_and_marks_a_missing_profile(server: Server) -> None:
    snapshot = Poller(server.url).poll()
    assert snapshot.error is None
    assert [(e.model, e.version, e.problem) for e in snapshot.entries] == [
        ("digits", "1", None),
        ("fresh", "2", None),
        ("minilm", "1", "no profile (model 'minilm' has no reference profile)"),
    ]
    assert snapshot.documents == [DRIFTED, FRESH]
    assert "/v2/models/digits/versions/1/drift" in server.canned.paths


def test_poll_only_the_named_models(server: Server) -> None:
    snapshot = Poller(server.url).poll(["minilm", "digits"])
    assert [(e.model, e.document is None) for e in snapshot.entries] == [
        ("minilm", True),
        ("digits", False),
    ]


def test_select_explains_a_named_model_without_a_ready_version() -> None:
    assert select(INDEX, ["broken", "gone"]) == [
        ("broken", "1", "not ready (UNAVAILABLE: load failed)"),
        ("gone", "-", "not in the repository index"),
    ]
    assert [m for m, _, _ in select(INDEX)] == ["digits", "fresh", "minilm"]


def test_the_token_is_sent_and_a_missing_one_is_named() -> None:
    secured = _start(Canned(token=TOKEN))
    try:
        assert Poller(secured.url, token=TOKEN).poll().documents == [DRIFTED, FRESH]
        with pytest.raises(UserInputError, match=r"HTTP 401.*--token"):
            Poller(secured.url).check([])
        assert "HTTP 401" in (Poller(secured.url, token="wrong").poll().error or "")
    finally:
        secured.stop()


def test_check_names_unknown_models_and_an_absent_server(server: Server, closed_port: str) -> None:
    Poller(server.url).check(["digits", "minilm"])
    with pytest.raises(ConfigError, match=r"--model nope: not served .* digits"):
        Poller(server.url).check(["digits", "nope"])
    with pytest.raises(UserInputError, match=r"cannot reach .*connection refused"):
        Poller(closed_port).check([])


def test_a_server_that_goes_away_is_a_snapshot_error_not_a_crash() -> None:
    gone = _start(Canned())
    poller = Poller(gone.url)
    first = poller.poll()
    gone.stop()
    second = poller.poll()
    assert first.error is None
    assert second.entries == ()
    assert second.error is not None and "cannot reach" in second.error
    config = make_config(url=gone.url)
    text = _text(view(config, second, first.entries))
    assert "unreachable" in text and "digits v1" in text  # the last answer stays on screen


def test_redirects_are_not_followed(server: Server) -> None:
    elsewhere = _start(Canned())
    server.canned.redirect_to = elsewhere.url
    try:
        snapshot = Poller(server.url).poll(["digits"])
    finally:
        elsewhere.stop()
    assert snapshot.entries[0].problem is not None and "HTTP 307" in snapshot.entries[0].problem
    assert elsewhere.canned.paths == []


# -- the table ---------------------------------------------------------------------------------


def test_table_shows_verdicts_windows_and_feature_rows(server: Server) -> None:
    text = _text(table(Poller(server.url).poll().entries, title="drift"))
    assert "digits v1" in text and "DRIFT" in text and "window 312/500" in text
    assert "share 0.67 (drift at ≥ 0.50)" in text and "observed 2,040 rows" in text
    assert "since 2026-11-22 10:00:00 UTC" in text
    class_row = next(line for line in text.splitlines() if "class" in line and "chi2" in line)
    assert (
        "31.2" in class_row and "16.9" in class_row and "1.85" in class_row and "DRIFT" in class_row
    )
    mean_row = next(line for line in text.splitlines() if "pixels.mean" in line)
    assert "0.94" in mean_row and " ok" in mean_row
    assert "validation (count): pixels: 3 out_of_range" in text
    assert "fresh v2" in text and "no check yet" in text
    fresh_row = next(line for line in text.splitlines() if "embedding.norm" in line)
    assert "waiting" in fresh_row and "wasserstein" in fresh_row
    assert "validation (count): no failures" in text
    assert "minilm v1: no profile" in text


def test_a_healthy_model_reads_ok() -> None:
    doc = copy.deepcopy(DRIFTED)
    doc["drifted"] = False
    text = _text(table([Drift("digits", "1", doc)]))
    assert "digits v1  ok" in text
    assert "no READY model" in _text(table([]))


# -- history and plot --------------------------------------------------------------------------


def _snapshot(at: float, drifted: bool, score: float | None = 0.2) -> Snapshot:
    doc = copy.deepcopy(DRIFTED)
    doc["drifted"] = drifted
    doc["features"][2]["score"] = score
    return Snapshot(
        at, 0.0, (Drift("digits", "1", doc), Drift("minilm", "1", problem="no profile"))
    )


def test_history_records_ratios_and_verdicts() -> None:
    history = History()
    history.record(_snapshot(10.0, False, None))
    history.record(_snapshot(12.0, True))
    history.record(Snapshot(14.0, 0.0, error="cannot reach"))
    assert history.versions() == [("digits", "1")]
    assert history.start == 10.0
    assert history.verdicts("digits", "1") == [(10.0, False), (12.0, True)]
    ratios = history.ratios("digits", "1")
    assert ratios["confidence"] == [(10.0, None), (12.0, pytest.approx(2.0))]
    assert set(ratios) == {"pixels.mean", "class", "confidence"}


def test_history_keeps_at_most_max_polls_per_series() -> None:
    history = History()
    for i in range(MAX_POLLS + 25):
        history.record(_snapshot(float(i), i % 2 == 0))
    assert len(history.verdicts("digits", "1")) == MAX_POLLS
    assert history.verdicts("digits", "1")[0][0] == 25.0
    assert all(len(points) == MAX_POLLS for points in history.ratios("digits", "1").values())
    with pytest.raises(ValueError, match="max_polls"):
        History(0)


def test_drift_spans_run_to_the_next_poll() -> None:
    polls = [(0.0, False), (1.0, True), (2.0, True), (3.0, False), (4.0, True)]
    assert drift_spans(polls) == [(1.0, 3.0), (4.0, 4.0)]
    assert drift_spans([(0.0, False)]) == []


def test_plot_writes_a_png(tmp_path: Path) -> None:
    history = History()
    for i in range(20):
        history.record(_snapshot(100.0 + i, 5 <= i < 12, None if i < 3 else 0.05 * i))
    path = tmp_path / "drift.png"
    plot(history, path)
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 10_000
    empty = tmp_path / "empty.png"
    plot(History(), empty)
    assert empty.read_bytes()[:8] == PNG


# -- options -----------------------------------------------------------------------------------


def test_bad_options_name_the_option(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--interval: .*greater than 0"):
        make_config(interval_s=0)
    with pytest.raises(ConfigError, match=r"--duration: .*greater than 0"):
        make_config(duration_s=-1)
    with pytest.raises(ConfigError, match=r"--plot .*folder .*missing.* does not exist"):
        make_config(plot=tmp_path / "missing" / "x.png")
    with pytest.raises(ConfigError, match=r"--plot .*expected a \.png"):
        make_config(plot=tmp_path / "x.jpg")
    with pytest.raises(ConfigError, match=r"URL 'http://h/v2': .*without a path"):
        make_config(url="http://h/v2")
    assert make_config(url="http://127.0.0.1:8000/").url == "http://127.0.0.1:8000"


# -- the command -------------------------------------------------------------------------------


def test_cli_once_prints_the_table(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    main(["monitor", server.url, "--once"])
    text = capsys.readouterr().out
    assert "digits v1" in text and "DRIFT" in text and "class" in text
    assert "minilm v1: no profile" in text and "broken" not in text


def test_cli_once_json_prints_the_documents(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["monitor", server.url, "--once", "--json", "--model", "fresh"])
    assert json.loads(capsys.readouterr().out) == [FRESH]


def test_cli_token_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    secured = _start(Canned(token=TOKEN))
    monkeypatch.setenv("INFERNO_SERVE_TOKEN", TOKEN)
    try:
        main(["monitor", secured.url, "--once", "--json"])
    finally:
        secured.stop()
    assert json.loads(capsys.readouterr().out) == [DRIFTED, FRESH]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--interval", "0"], "--interval"),
        (["--plot", "missing/x.png"], "does not exist"),
        (["--plot", "x.gif"], "expected a .png"),
        (["--model", "nope"], "--model nope: not served"),
        (["--json"], "--json: only with --once"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(
    server: Server,
    args: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # "missing/" does not exist there
    with pytest.raises(SystemExit) as exit_info:
        main(["monitor", server.url, *args])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


def test_cli_unreachable_server_is_one_line_and_exit_2(
    closed_port: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["monitor", closed_port])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "cannot reach" in lines[0] and "connection refused" in lines[0]


def test_cli_watch_for_a_duration_writes_the_plot(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "drift.png"
    main(["monitor", server.url, "--duration", "1", "--interval", "0.2", "--plot", str(path)])
    polls = sum(p.endswith("/repository/index") for p in server.canned.paths)
    assert 3 <= polls <= 8  # the start check, then one poll each 0.2 s for 1 s (some, if slow)
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 10_000
    text = capsys.readouterr().out
    assert "digits v1" in text and f"plot saved to {path}" in text


def test_cli_ctrl_c_ends_the_watch_cleanly_and_writes_the_plot(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "drift.png"
    timer = threading.Timer(0.7, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        main(["monitor", server.url, "--duration", "30", "--interval", "0.2", "--plot", str(path)])
    finally:
        timer.cancel()
    assert path.read_bytes()[:8] == PNG
    assert f"plot saved to {path}" in capsys.readouterr().out
