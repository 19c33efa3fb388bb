"""``inferno serve`` against the raw runtime and three Python serving stacks, under the same load.

Every contender serves the same plan (the ``minilm`` plan of ``inferno accelerate``, loaded
with one runtime thread) and answers the same Open Inference Protocol JSON; the same load
generator (``inferno bench``: closed loop, one bundled sentence per request, loopback) loads
each in turn at every concurrency level.

contenders
    ``raw``: the ceiling, no server. ``benchmarks/peers/raw.py`` times ``predict`` + L2
    normalization in-process at batch sizes 1, 8, 16, 32, 64 (interleaved in slices); the
    ceiling is the best sentences/s, the single-request reference its batch-1 p50.
    ``inferno``: ``inferno serve REPO --model minilm --threads 1 --instances 1`` plus
    ``--inferno-args`` (default ``--max-batch-size 64`` and inferno's adaptive delay: greedy
    batches, a lone request never waits).
    ``fastapi``: ``peers/fastapi_peer.py``, plain FastAPI on uvicorn, one runtime call per
    request, no batching.
    ``litserve``: ``peers/litserve_peer.py``, LitServe's batching (``max_batch_size``,
    ``batch_timeout=1 ms``).
    ``ray``: ``peers/ray_peer.py``, Ray Serve with ``@serve.batch`` (greedy, 0 s wait).
    The peers' batch cap is ``--peer-batch``; ``auto`` (the default) gives them the raw
    runtime's best batch size measured in the same run: both pad a batch to its longest
    sentence exactly as the raw loop does, so that sweep is what suits them (it runs, and is
    shown, whenever ``auto`` needs it). Each peer's docstring says why its other settings are
    its best.

pinning (``--pinned``, the headline)
    On a 2-core machine the load generator would steal the server's CPU. Pinned, each server
    (with everything it spawns) and the raw loop run under ``taskset -c 0``, the load
    generator (and this script) on core 1. ``--unpinned`` runs the same settings without
    ``taskset``; ``--both`` (the default) runs pinned first, then unpinned.

measurement
    One server is up at a time. Per level, an unrecorded ``inferno bench`` run of
    ``--warmup`` seconds, then the measured run of ``--duration`` seconds with no warm-up
    of its own; the server's CPU time (user + system, summed over the server process and all
    its descendants: LitServe and Ray spawn several) is read just before and after the
    measured run, and divided by the requests it recorded: server CPU s/request.
    ``--rounds N`` repeats everything N times, the contenders' order rotating each round;
    values are medians over rounds, ratios medians of per-round ratios.

ratios and checks
    ``×best peer``: req/s ÷ the fastest of fastapi/litserve/ray at the same level;
    ``×raw``: req/s ÷ the raw ceiling. The acceptance checks, on the pinned figures:
    at concurrency 64 inferno ≥ 2× the best peer and ≥ 70% of the raw ceiling; at
    concurrency 1 inferno's p50 within 1 ms of the raw batch-1 p50.

Reproduce (repository root, dev environment plus the peers)::

    .venv/bin/pip install -r benchmarks/requirements-serving.txt
    python benchmarks/serving.py                     # accelerates minilm first if needed
    python benchmarks/serving.py --pinned --duration 20 --rounds 3

Results go to ``benchmarks/results/serving-<timestamp>.json``. Absolute numbers on a shared
machine mean little: read the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
PEERS_DIR = HERE / "peers"
RESULTS = HERE / "results"
MODEL = "minilm"
CONTENDERS = ("raw", "inferno", "fastapi", "litserve", "ray")
PEERS = ("fastapi", "litserve", "ray")
PEER_PACKAGES = {"fastapi": "fastapi", "litserve": "litserve", "ray": "ray"}
LABELS = {
    "raw": "raw runtime",
    "inferno": "inferno serve",
    "fastapi": "FastAPI/uvicorn",
    "litserve": "LitServe",
    "ray": "Ray Serve",
}
SERVER_CORE, LOAD_CORE = 0, 1
RAW_BATCHES = "1,8,16,32,64"
DEFAULT_INFERNO_ARGS = "--max-batch-size 64"
READY_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 30.0
CHECK_LEVEL, LATENCY_LEVEL = 64, 1
MIN_PEER_RATIO, MIN_RAW_RATIO, MAX_P50_GAP_MS = 2.0, 0.70, 1.0


def say(text: str = "") -> None:
    print(text, flush=True)


@dataclass(frozen=True)
class Point:
    """One server at one concurrency level in one round."""

    contender: str
    level: int
    requests: int
    errors: int
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    cpu_s_per_request: float | None
    error_kinds: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Ceiling:
    """The raw runtime in one round: every batch size, and the best."""

    batches: tuple[dict[str, Any], ...]
    best_batch: int
    rps: float
    """Sentences/s at the best batch size."""
    p50_ms: float
    """Batch-1 latency p50: the single-request reference."""
    p99_ms: float
    cpu_s_per_request: float
    """At the best batch size."""


@dataclass
class ModeRun:
    """Everything measured in one mode (pinned or unpinned), round by round."""

    pinned: bool
    peer_batch: int = 0
    ceilings: list[Ceiling] = field(default_factory=list)
    rounds: list[dict[str, dict[int, Point]]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    commands: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return "pinned" if self.pinned else "unpinned"


# --------------------------------------------------------------------------- processes


def pin(command: list[str], core: int | None) -> list[str]:
    return command if core is None else ["taskset", "-c", str(core), *command]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/v2/health/ready", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def tail(path: Path, lines: int = 25) -> str:
    text = path.read_text("utf-8", "replace").splitlines() if path.exists() else []
    return "\n".join("    " + line for line in text[-lines:]) or "    (nothing)"


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and all its live descendants."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            times = p.cpu_times()
            total += times.user + times.system
    return total


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server, then SIGKILL whatever of its tree is left.

    Ray's actors run in process groups of their own, so the descendants are collected by pid
    first and each one still alive at the end is killed by pid.
    """
    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(STOP_TIMEOUT_S)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # started with start_new_session: its pgid is its pid
    for child in descendants:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    proc.wait()
    psutil.wait_procs(descendants, timeout=5)


@contextlib.contextmanager
def running(command: list[str], label: str, log_dir: Path) -> Iterator[tuple[int, str]]:
    """Start a server on a free port, wait until it is ready; yield (pid, url); stop it."""
    port = free_port()
    command = [part.replace("{port}", str(port)) for part in command]
    url = f"http://127.0.0.1:{port}"
    log = log_dir / f"{label}-{port}.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            command,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not ready(url):
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{label} exited with status {proc.returncode} before it was "
                    f"ready; its output ended with:\n{tail(log)}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{label} was not ready after {READY_TIMEOUT_S:g} s; its "
                    f"output ends with:\n{tail(log)}"
                )
            time.sleep(0.25)
        yield proc.pid, url
    finally:
        stop(proc)


def run_json(command: list[str], what: str) -> Any:
    """Run a command that prints one JSON document on stdout."""
    done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        err = "\n".join("    " + line for line in done.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"{what} failed (status {done.returncode}):\n{err}")
    return json.loads(done.stdout)


# --------------------------------------------------------------------------- contenders


def ensure_plan(repository: Path) -> Path:
    """The latest minilm plan in ``repository``; ``inferno accelerate minilm`` writes it if missing."""
    from inferno.repository import version_path, versions

    if not versions(repository, MODEL):
        say(f"no {MODEL} plan in {repository}: running `inferno accelerate {MODEL}` (minutes)")
        subprocess.run(
            [sys.executable, "-m", "inferno", "accelerate", MODEL, "--repository", str(repository)],
            check=True,
        )
    return version_path(repository, MODEL)


TEXT = RESULTS / "short_sentences.txt"
SHORT_TOKENS = 16
"""A short sentence: at most this many tokens (the 16-token sentence the CPU figures assume)."""


def short_sentences(plan: Path) -> Path:
    """The bundled sentences of at most SHORT_TOKENS tokens, one per line: every contender's input."""
    from inferno.models.text import TextPreprocessor
    from inferno.models.zoo.minilm import sentences

    lines = sentences()
    counts = TextPreprocessor(plan / "tokenizer.json").token_counts(lines)
    short = [s for s, n in zip(lines, counts, strict=True) if n <= SHORT_TOKENS]
    RESULTS.mkdir(parents=True, exist_ok=True)
    TEXT.write_text("\n".join(short) + "\n", "utf-8")
    return TEXT


def measure_raw(args: argparse.Namespace, core: int | None) -> Ceiling:
    command = [
        sys.executable,
        str(PEERS_DIR / "raw.py"),
        "--repository",
        str(args.repository),
        "--threads",
        "1",
        "--batches",
        RAW_BATCHES,
        "--seconds",
        str(args.raw_seconds),
        "--warmup",
        str(min(args.warmup, 1.0)),
        "--text",
        str(TEXT),
    ]
    doc = run_json(pin(command, core), "the raw runtime")
    batches = tuple(doc["batches"])
    best = max(batches, key=lambda b: b["sentences_per_s"])
    one = next(b for b in batches if b["batch"] == 1)
    return Ceiling(
        batches,
        best["batch"],
        best["sentences_per_s"],
        one["p50_ms"],
        one["p99_ms"],
        best["cpu_s_per_sentence"],
    )


def server_command(key: str, args: argparse.Namespace, peer_batch: int) -> list[str]:
    """How to start contender ``key``; ``{port}`` is filled in at start."""
    python, repo = sys.executable, str(args.repository)
    if key == "inferno":
        return [
            python,
            "-m",
            "inferno",
            "serve",
            repo,
            "--model",
            MODEL,
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
            "--threads",
            "1",
            "--instances",
            "1",
            *shlex.split(args.inferno_args),
        ]
    common = ["--repository", repo, "--port", "{port}", "--threads", "1"]
    script = [python, str(PEERS_DIR / f"{key}_peer.py"), *common]
    if key == "litserve":
        return [*script, "--max-batch-size", str(peer_batch), "--batch-timeout", "0.001"]
    if key == "ray":
        return [*script, "--max-batch-size", str(peer_batch), "--batch-wait-timeout-s", "0"]
    return script


def bench_command(url: str, level: int, seconds: float, *, measured: bool) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "inferno",
        "bench",
        MODEL,
        "--url",
        url,
        "--concurrency",
        str(level),
        "--duration",
        str(seconds),
        "--warmup",
        "0",
        "--text",
        str(TEXT),
    ]
    return [*command, "--json"] if measured else command


def warm_up(key: str, url: str, level: int, args: argparse.Namespace, core: int | None) -> None:
    """An unrecorded ``inferno bench`` run of ``args.warmup`` seconds at ``level``."""
    if args.warmup > 0:
        warm = subprocess.run(
            pin(bench_command(url, level, args.warmup, measured=False), core),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        if warm.returncode != 0:
            raise RuntimeError(f"warm-up of {key} failed:\n{warm.stderr[-2000:]}")


def load_point(
    key: str,
    pid: int,
    url: str,
    level: int,
    args: argparse.Namespace,
    core: int | None,
    *,
    warm: bool = True,
) -> Point:
    """Warm up at ``level`` (unless ``warm`` is False: the caller did), then measure it,
    reading the server's CPU time around the measure."""
    if warm:
        warm_up(key, url, level, args, core)
    cpu_before = tree_cpu_s(pid)
    report = run_json(
        pin(bench_command(url, level, args.duration, measured=True), core),
        f"inferno bench against {key}",
    )
    cpu = tree_cpu_s(pid) - cpu_before
    point = report["points"][0]
    latency = point.get("latency_ms") or {}
    requests = int(point["requests"])
    return Point(
        key,
        level,
        requests,
        int(point["errors"]),
        float(point["throughput_rps"]),
        latency.get("p50"),
        latency.get("p99"),
        cpu / requests if requests else None,
        dict(point.get("error_kinds") or {}),
    )


def missing_package(key: str) -> str | None:
    package = PEER_PACKAGES.get(key)
    if package and importlib.util.find_spec(package) is None:
        return f"{package} is not installed (pip install -r benchmarks/requirements-serving.txt)"
    return None


# --------------------------------------------------------------------------- one mode


def run_mode(args: argparse.Namespace, pinned: bool, log_dir: Path) -> ModeRun:
    mode = ModeRun(pinned)
    server_core = SERVER_CORE if pinned else None
    load_core = LOAD_CORE if pinned else None
    servers = [c for c in args.contenders if c != "raw"]
    for key in servers:
        reason = missing_package(key)
        if reason:
            mode.skipped[key] = reason
            say(f"  skipping {key}: {reason}")
    servers = [c for c in servers if c not in mode.skipped]
    needs_raw = "raw" in args.contenders or args.peer_batch == "auto"
    for index in range(args.rounds):
        say(f"{mode.name}, round {index + 1}/{args.rounds}")
        if needs_raw:
            ceiling = measure_raw(args, server_core)
            mode.ceilings.append(ceiling)
            say(
                f"  raw: best batch {ceiling.best_batch}, {ceiling.rps:.1f} sentences/s; batch-1 "
                f"p50 {ceiling.p50_ms:.2f} ms"
            )
        if index == 0:
            mode.peer_batch = (
                mode.ceilings[0].best_batch if args.peer_batch == "auto" else int(args.peer_batch)
            )
            mode.commands = {
                k: shlex.join(pin(server_command(k, args, mode.peer_batch), server_core))
                for k in servers
            }
        results: dict[str, dict[int, Point]] = {}
        shift = index % len(servers) if servers else 0
        for key in servers[shift:] + servers[:shift]:
            if key in mode.skipped:
                continue
            command = pin(server_command(key, args, mode.peer_batch), server_core)
            try:
                with running(command, key, log_dir) as (pid, url):
                    results[key] = {}
                    for level in args.concurrency:
                        p = load_point(key, pid, url, level, args, load_core)
                        results[key][level] = p
                        say(
                            f"  {key:>8} c={level:<3} {p.rps:8.1f} req/s  p50 {_ms(p.p50_ms)}  "
                            f"p99 {_ms(p.p99_ms)}  errors {p.errors}"
                        )
            except RuntimeError as exc:
                mode.skipped[key] = str(exc)
                results.pop(key, None)
                say(f"  {key} FAILED, left out of this mode: {exc}")
        mode.rounds.append(results)
    return mode


# --------------------------------------------------------------------------- summaries


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} ms"


def _median(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def best_peer(results: dict[str, dict[int, Point]], level: int) -> Point | None:
    peers = [results[k][level] for k in PEERS if k in results and level in results[k]]
    return max(peers, key=lambda p: p.rps) if peers else None


def summarize(mode: ModeRun, levels: list[int]) -> list[dict[str, Any]]:
    """One row per (server, level): medians over rounds and medians of per-round ratios."""
    rows = []
    keys = [k for k in CONTENDERS if any(k in r for r in mode.rounds)]
    for key in keys:
        for level in levels:
            pts = [
                (r[key][level], r, i)
                for i, r in enumerate(mode.rounds)
                if key in r and level in r[key]
            ]
            if not pts:
                continue
            vs_peer, vs_raw = [], []
            for p, r, i in pts:
                peer = best_peer(r, level)
                vs_peer.append(p.rps / peer.rps if peer and peer.rps else None)
                vs_raw.append(p.rps / mode.ceilings[i].rps if mode.ceilings else None)
            rows.append(
                {
                    "contender": key,
                    "level": level,
                    "rps": _median([p.rps for p, _, _ in pts]),
                    "p50_ms": _median([p.p50_ms for p, _, _ in pts]),
                    "p99_ms": _median([p.p99_ms for p, _, _ in pts]),
                    "errors": sum(p.errors for p, _, _ in pts),
                    "requests": sum(p.requests for p, _, _ in pts),
                    "cpu_s_per_request": _median([p.cpu_s_per_request for p, _, _ in pts]),
                    "vs_best_peer": _median(vs_peer),
                    "vs_raw": _median(vs_raw),
                }
            )
    return rows


def raw_summary(mode: ModeRun) -> dict[str, Any] | None:
    if not mode.ceilings:
        return None
    c = mode.ceilings
    return {
        "rps": _median([x.rps for x in c]),
        "p50_ms": _median([x.p50_ms for x in c]),
        "p99_ms": _median([x.p99_ms for x in c]),
        "best_batch": c[0].best_batch,
        "cpu_s_per_request": _median([x.cpu_s_per_request for x in c]),
    }


def table(mode: ModeRun, rows: list[dict[str, Any]]) -> str:
    head = [
        "contender",
        "conc.",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "CPU ms/req",
        "×best peer",
        "×raw",
    ]
    lines = []
    raw = raw_summary(mode)
    if raw is not None:
        lines.append(
            [
                f"raw (batch {raw['best_batch']}; p50/p99 at batch 1)",
                "—",
                f"{raw['rps']:.1f}",
                f"{raw['p50_ms']:.2f}",
                f"{raw['p99_ms']:.2f}",
                "—",
                f"{raw['cpu_s_per_request'] * 1000:.2f}",
                "",
                "1.00x",
            ]
        )
    for r in rows:

        def num(v: float | None, fmt: str) -> str:
            return "—" if v is None else format(v, fmt)

        cpu = r["cpu_s_per_request"]
        lines.append(
            [
                LABELS[r["contender"]],
                str(r["level"]),
                f"{r['rps']:.1f}",
                num(r["p50_ms"], ".2f"),
                num(r["p99_ms"], ".2f"),
                str(r["errors"]),
                num(None if cpu is None else cpu * 1000, ".2f"),
                num(r["vs_best_peer"], ".2f") + ("x" if r["vs_best_peer"] else ""),
                num(r["vs_raw"], ".2f") + ("x" if r["vs_raw"] else ""),
            ]
        )
    return grid(head, lines)


def grid(head: list[str], lines: list[list[str]]) -> str:
    """A plain-text table: the first column left-aligned, the others right-aligned."""
    widths = [max(len(x[i]) for x in [head, *lines]) for i in range(len(head))]

    def fmt(row: list[str]) -> str:
        return "  ".join(
            x.ljust(widths[0]) if i == 0 else x.rjust(widths[i]) for i, x in enumerate(row)
        )

    return "\n".join([fmt(head), "  ".join("-" * w for w in widths), *map(fmt, lines)])


def checks(mode: ModeRun | None, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The three acceptance checks, on the pinned figures."""

    def row(key: str, level: int) -> dict[str, Any] | None:
        return next((r for r in rows if r["contender"] == key and r["level"] == level), None)

    raw = raw_summary(mode) if mode else None
    inferno64, inferno1 = row("inferno", CHECK_LEVEL), row("inferno", LATENCY_LEVEL)
    out = []

    def add(name: str, value: float | None, passed: bool | None, detail: str) -> None:
        out.append({"check": name, "value": value, "passed": passed, "detail": detail})

    peer = inferno64["vs_best_peer"] if inferno64 else None
    add(
        f"pinned c={CHECK_LEVEL}: inferno ≥ {MIN_PEER_RATIO:g}× the best peer's throughput",
        peer,
        None if peer is None else peer >= MIN_PEER_RATIO,
        f"{peer:.2f}x" if peer is not None else "not measured",
    )
    share = inferno64["vs_raw"] if inferno64 else None
    add(
        f"pinned c={CHECK_LEVEL}: inferno ≥ {MIN_RAW_RATIO:.0%} of the raw ceiling",
        share,
        None if share is None else share >= MIN_RAW_RATIO,
        f"{share:.0%}" if share is not None else "not measured",
    )
    gap = (inferno1["p50_ms"] - raw["p50_ms"]) if inferno1 and raw and inferno1["p50_ms"] else None
    add(
        f"pinned c={LATENCY_LEVEL}: inferno p50 within {MAX_P50_GAP_MS:g} ms of raw batch-1 p50",
        gap,
        None if gap is None else gap <= MAX_P50_GAP_MS,
        f"{inferno1['p50_ms']:.2f} ms vs {raw['p50_ms']:.2f} ms: {gap:+.2f} ms"
        if gap is not None and inferno1 and raw
        else "not measured",
    )
    return out


def print_mode(mode: ModeRun, rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    where = (
        f"servers and raw on core {SERVER_CORE}, load generator on core {LOAD_CORE}"
        if mode.pinned
        else "nothing pinned"
    )
    say(
        f"\n== {mode.name}: {where}; one runtime thread; {args.duration:g} s per level after "
        f"{args.warmup:g} s warm-up; {args.rounds} round(s), medians; peers batch up to "
        f"{mode.peer_batch} ({'the raw best' if args.peer_batch == 'auto' else '--peer-batch'}) =="
    )
    for c in mode.ceilings[:1]:
        sweep = ", ".join(f"b{b['batch']} {b['sentences_per_s']:.0f}/s" for b in c.batches)
        say(f"  raw sweep (round 1): {sweep}")
    for key, reason in mode.skipped.items():
        say(f"  left out {key}: {reason.splitlines()[0]}")
    say("\n" + table(mode, rows))


# --------------------------------------------------------------------------- driver


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--repository",
        type=Path,
        default=Path("model_repository"),
        help="repository with (or to get) the minilm plan (default model_repository)",
    )
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per level")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per level")
    p.add_argument(
        "--raw-seconds", type=float, default=3.0, help="timed seconds per raw batch size"
    )
    p.add_argument("--concurrency", default="1,16,64")
    p.add_argument("--contenders", default=",".join(CONTENDERS))
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument(
        "--peer-batch",
        default="auto",
        help="LitServe/Ray max batch size, or 'auto': the raw runtime's best",
    )
    p.add_argument(
        "--inferno-args",
        default=DEFAULT_INFERNO_ARGS,
        help=f"extra `inferno serve` options; write --inferno-args='...' (the value starts with "
        f"--); default {DEFAULT_INFERNO_ARGS!r}",
    )
    group = p.add_mutually_exclusive_group()
    for flag, what in (
        ("pinned", f"servers and raw on core {SERVER_CORE}, load generator on core {LOAD_CORE}"),
        ("unpinned", "nothing pinned"),
        ("both", "pinned (the headline), then unpinned: the default"),
    ):
        group.add_argument(f"--{flag}", dest="modes", action="store_const", const=flag, help=what)
    p.add_argument(
        "--json",
        type=Path,
        help="results file (default benchmarks/results/serving-<timestamp>.json)",
    )
    args = p.parse_args(argv)
    args.modes = args.modes or "both"
    try:
        args.concurrency = [int(x) for x in args.concurrency.split(",") if x.strip()]
    except ValueError:
        p.error(f"--concurrency: expected whole numbers like 1,16,64, got {args.concurrency!r}")
    args.contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = [c for c in args.contenders if c not in CONTENDERS]
    if unknown:
        p.error(f"--contenders: unknown {unknown}; expected some of {', '.join(CONTENDERS)}")
    if args.peer_batch != "auto" and not args.peer_batch.isdigit():
        p.error(f"--peer-batch: expected 'auto' or a whole number, got {args.peer_batch!r}")
    if min(args.duration, args.raw_seconds, args.rounds) <= 0 or args.warmup < 0:
        p.error("--duration, --raw-seconds and --rounds must be > 0, --warmup >= 0")
    cores = os.sched_getaffinity(0)
    if args.modes != "unpinned" and not {SERVER_CORE, LOAD_CORE} <= cores:
        if args.modes == "pinned":
            p.error(
                f"--pinned needs cores {SERVER_CORE} and {LOAD_CORE}; this process may use {sorted(cores)}"
            )
        say(f"note: cores {SERVER_CORE} and {LOAD_CORE} are not both usable: unpinned only")
        args.modes = "unpinned"
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from inferno.hardware import detect

    cpu = detect().cpu
    command = shlex.join(["python", *sys.argv])
    load_before = os.getloadavg()[0]
    say(
        f"CPU: {cpu.model} ({cpu.usable_cores} usable cores); 1-min load average {load_before:.2f}"
        f"; {command}"
    )
    if load_before > 0.5:
        say("  WARNING: other processes are busy on this machine: figures will be noisy")
    plan = ensure_plan(args.repository)
    short_sentences(plan)  # writes TEXT
    say(f"plan: {plan}; input: one sentence of <= {SHORT_TOKENS} tokens per request "
        f"({len(TEXT.read_text().splitlines())} sentences from the bundled set)")
    own_cores = os.sched_getaffinity(0)
    modes: dict[str, tuple[ModeRun, list[dict[str, Any]]]] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="inferno-serving-") as tmp:
        for pinned in {"pinned": [True], "unpinned": [False], "both": [True, False]}[args.modes]:
            # pinned, this script keeps off the server's core too
            os.sched_setaffinity(0, {LOAD_CORE} if pinned else own_cores)
            try:
                mode = run_mode(args, pinned, Path(tmp))
            finally:
                os.sched_setaffinity(0, own_cores)
            modes[mode.name] = (mode, summarize(mode, args.concurrency))
    for mode, rows in modes.values():
        print_mode(mode, rows, args)
    pinned_mode, pinned_rows = modes.get("pinned", (None, []))
    results = checks(pinned_mode, pinned_rows)
    say("\nacceptance (pinned figures):")
    for c in results:
        verdict = {True: "PASS", False: "FAIL", None: "n/a "}[c["passed"]]
        say(f"  [{verdict}] {c['check']}: {c['detail']}")
    elapsed = time.perf_counter() - started
    say(f"\nbenchmark took {elapsed:.0f} s; 1-min load average {os.getloadavg()[0]:.2f} at the end")
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    path = args.json or RESULTS / f"serving-{stamp}.json"
    record = {
        "benchmark": "serving",
        "command": command,
        "cpu": cpu.model,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "plan": str(plan),
        "settings": {k: v for k, v in vars(args).items() if k != "json"}
        | {"repository": str(args.repository)},
        "modes": {
            name: {
                "peer_batch": m.peer_batch,
                "commands": m.commands,
                "skipped": m.skipped,
                "raw": raw_summary(m),
                "rows": rows,
                "raw_rounds": [asdict(c) for c in m.ceilings],
                "rounds": [
                    {k: [asdict(p) for p in v.values()] for k, v in r.items()} for r in m.rounds
                ],
            }
            for name, (m, rows) in modes.items()
        },
        "checks": results,
        "benchmark_s": elapsed,
        "load_average_1min_before": load_before,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    say(f"results: {path}")


if __name__ == "__main__":
    main()
