"""``inferno serve`` attacked as an operator would: overload, rejection cost, floods, amplification.

The figures of issue 15 ("Hardening the server"), on loopback only, every loop and wait bounded.

server
    ``taskset -c 0 inferno serve REPO --threads 1 --queue-size 64 --keep-alive-timeout-s 2
    --header-timeout-s 3 --max-connections 2×--max-open`` (plus ``--max-response-mb`` and
    ``--server-args``), serving digits
    and minilm (fp32 on ONNX Runtime, CPU). REPO is ``--repository`` when it holds both models,
    else a temporary one that ``inferno.accelerate`` builds first (minutes). A flag the server
    does not list in ``inferno serve --help`` is left out, and said so.

load
    This process pins itself to core 1 (``os.sched_setaffinity``); wrk runs there too. With
    fewer than 2 cores nothing is pinned, and the output says so. The generator is asyncio
    (uvloop when installed) over raw keep-alive HTTP/1.1 connections, each sending a pre-built
    request: digits one 8x8 image as FP32 JSON, minilm one short sentence as BYTES JSON.

phases, per model
    ``capacity``: closed loop, ``--connections`` connections (default 16) for ``--duration``
    seconds; capacity = answers 200 per second. ``open loop`` at ``--multipliers`` × capacity
    (default 0.5, 1, 1.5, 2, 3): requests sent on a fixed schedule whatever the answers, each
    on a free connection or a new one (at most ``--max-open``); printed: the rate really
    sent (never the target when the generator fell short: it says so), 200/s, 503/s,
    other/s (answers that came while the phase was sending; the backlog answered after it
    counts in the totals of the JSON only), goodput as % of capacity, p50/p99 of the 200s'
    latency, the spread (IQR) of the per-second 200 counts, the connections opened and the
    requests not sent for want of a free connection. ``reject``: closed loop with
    ``--reject-connections`` (default 256), so that nearly every request finds the queue
    full. If ``wrk`` is installed: closed loop at 64 and 512 connections with a Lua POST
    script, served/s and non-2xx/s.

rejection cost
    The server's CPU time (utime + stime from ``/proc/PID/stat``) around each phase. A served
    request's cost c_served is the capacity phase's CPU per answer (no 503 there); a 503's cost
    c_rejected is the reject phase's CPU less its served requests at c_served, per 503. A least
    squares fit of every phase's CPU over its served, 503 (and other) counts is printed beside
    them as a check. Their ratio ρ bounds the goodput of a CPU-bound server offered k ×
    capacity: (1 − kρ) / (1 − ρ) of capacity (the "bound" column, at the rate really sent).
    Served requests batched under overload cost less than at capacity, so a measured goodput
    can pass the bound a little.

connection floods
    ``--idle N`` sockets (default 2,000; up to 20,000, with RLIMIT_NOFILE raised to its hard
    limit first, capped and said so) that never send a byte; while they are open,
    ``/v2/health/live`` and an infer on fresh connections; then, after the keep-alive
    timeout, how many of them the server closed. A slowloris: ``--slowloris`` sockets that
    send a partial header line every second; how many the header timeout closed, and with
    what status.

amplification
    A minilm request of 64 rows with ``"outputs": [{"name": "embedding"}] × 4000``: status,
    request and response size, the server's peak RSS change; and the largest response of the
    whole run against the response budget (``--max-response-mb``, the server's default: the
    body limit).

Reproduce (repository root, dev environment)::

    python benchmarks/hardening.py --quick                       # a few seconds per phase
    python benchmarks/hardening.py --repository /tmp/repo --idle 20000

Results go to ``benchmarks/results/hardening-<timestamp>.json``. On a shared machine read
the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
HOST = "127.0.0.1"
MODELS = ("digits", "minilm")
SERVER_CORE, LOAD_CORE = 0, 1
SERVER_FLAGS = {"--threads": "1", "--queue-size": "64", "--keep-alive-timeout-s": "2", "--header-timeout-s": "3"}
READY_TIMEOUT_S = 240.0
REQUEST_TIMEOUT_S = 30.0
SENTENCE = "The quick brown fox jumps over the lazy dog."
MiB = 2**20
T = TypeVar("T")


def say(text: str = "") -> None:
    print(text, flush=True)


# --------------------------------------------------------------------------- requests


def request_bytes(path: str, body: bytes) -> bytes:
    head = (f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def infer_body(model: str, rows: int = 1, outputs: int = 0) -> bytes:
    if model == "digits":
        pixels = np.random.default_rng(0).random((rows, 64)) * 16
        tensor = {"name": "pixels", "shape": [rows, 1, 8, 8], "datatype": "FP32",
                  "data": [round(float(x), 3) for x in pixels.reshape(-1)]}
        output = "probabilities"
    else:
        tensor = {"name": "text", "shape": [rows], "datatype": "BYTES", "data": [SENTENCE] * rows}
        output = "embedding"
    doc: dict[str, Any] = {"inputs": [tensor]}
    if outputs:
        doc["outputs"] = [{"name": output}] * outputs
    return json.dumps(doc).encode()


def infer_request(model: str) -> bytes:
    return request_bytes(f"/v2/models/{model}/infer", infer_body(model))


# --------------------------------------------------------------------------- the server


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # fields from the 3rd on: utime is the 14th
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float | None:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def serve_flags_supported() -> set[str]:
    help_text = subprocess.run([sys.executable, "-m", "inferno", "serve", "--help"], capture_output=True,
                               text=True, env={**os.environ, "COLUMNS": "300"}, check=False).stdout
    return set(re.findall(r"--[a-z][a-z0-9-]+", help_text))


def server_command(repo: Path, port: int, args: argparse.Namespace, pinned: bool) -> tuple[list[str], list[str]]:
    """The serve command and the flags it had to leave out (not in this server's --help)."""
    supported = serve_flags_supported()
    # The connection cap sits above the generator's pool: at the cap the server closes the
    # connection idle longest, and under overload an "idle" one may hold a request still unread
    # in the kernel; that would measure the cap, not the overload path. The floods test the cap.
    wanted = {**SERVER_FLAGS, "--max-response-mb": f"{args.max_response_mb:g}",
              "--max-connections": str(2 * args.max_open)}
    flags = [part for flag, value in wanted.items() if flag in supported for part in (flag, value)]
    missing = [flag for flag in wanted if flag not in supported]
    command = [sys.executable, "-m", "inferno", "serve", str(repo), "--host", HOST, "--port", str(port),
               *flags, *shlex.split(args.server_args)]
    return (["taskset", "-c", str(SERVER_CORE), *command] if pinned else command), missing


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def http_status(port: int, path: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return None


@contextlib.contextmanager
def serving(command: list[str], port: int, log: Path) -> Iterator[int]:
    """Start the server, wait for /v2/health/ready; yield its pid; SIGTERM it (SIGKILL if it lingers)."""
    with log.open("wb") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while http_status(port, "/v2/health/ready") != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(log.read_text("utf-8", "replace").splitlines()[-20:])
                raise RuntimeError(f"the server did not get ready (status {proc.poll()}); its log ends:\n{tail}")
            time.sleep(0.25)
        yield proc.pid
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def ensure_repository(args: argparse.Namespace, tmp: Path) -> Path:
    from inferno.repository import versions

    repo: Path | None = args.repository
    if repo is not None and all(versions(repo, m) for m in MODELS):
        return repo
    import inferno

    repo = repo or tmp / "model_repository"
    say(f"building digits and minilm into {repo} (inferno.accelerate, fp32 on ONNX Runtime, CPU; minutes)")
    common: dict[str, Any] = {"variants": ("fp32",), "runtimes": ("onnxruntime",), "repeats": 3, "device": "cpu"}
    inferno.accelerate("digits", repository=repo, **common)
    inferno.accelerate("minilm", repository=repo, max_eval_samples=16, **common)
    return repo


# --------------------------------------------------------------------------- load generator


@dataclass
class Tally:
    """What one phase's answers were; ``at`` holds when each came (seconds from the phase's start)."""

    ok: int = 0
    rejected: int = 0
    other: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    at: dict[str, list[float]] = field(default_factory=lambda: {"ok": [], "rejected": [], "other": []})
    max_response: int = 0
    over_budget: int = 0
    connections: int = 0
    closed_after: Counter[int] = field(default_factory=Counter)
    """Answers after which the server closed the connection, by status."""


class Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def close(self) -> None:
        self.writer.close()


async def connect(port: int, tally: Tally) -> Conn:
    reader, writer = await asyncio.open_connection(HOST, port, limit=2**20)
    tally.connections += 1
    return Conn(reader, writer)


async def exchange(conn: Conn, request: bytes) -> tuple[int, int, bool]:
    """Send one request, read its whole answer: (status, response bytes, server closes)."""
    conn.writer.write(request)
    head = await conn.reader.readuntil(b"\r\n\r\n")
    lower = head.lower()
    match = re.search(rb"\r\ncontent-length:\s*(\d+)", lower)
    length = int(match.group(1)) if match else 0
    if length:
        await conn.reader.readexactly(length)
    return int(head[9:12]), len(head) + length, b"\r\nconnection: close" in lower


async def one_request(conn: Conn | None, port: int, request: bytes, tally: Tally, t0: float,
                      budget: int) -> Conn | None:
    """One request on ``conn`` (a new connection when None); the connection if it can be reused."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            if conn is None:
                conn = await connect(port, tally)
            status, size, closes = await exchange(conn, request)
    except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as exc:
        tally.other += 1
        tally.kinds[type(exc).__name__] += 1
        tally.at["other"].append(time.perf_counter() - t0)
        if conn is not None:
            conn.close()
        return None
    now = time.perf_counter()
    tally.max_response = max(tally.max_response, size)
    tally.over_budget += size > budget
    kind = "ok" if status == 200 else "rejected" if status == 503 else "other"
    tally.at[kind].append(now - t0)
    if status == 200:
        tally.ok += 1
        tally.latencies_ms.append((now - started) * 1000)
    elif status == 503:
        tally.rejected += 1
    else:
        tally.other += 1
        tally.kinds[f"HTTP {status}"] += 1
    if closes:
        tally.closed_after[status] += 1
        conn.close()
        return None
    return conn


async def closed_loop(port: int, request: bytes, connections: int, duration: float, budget: int) -> Tally:
    """``connections`` clients, each sending its next request as soon as the answer is in."""
    tally = Tally()
    t0 = time.perf_counter()
    end = t0 + duration

    async def client() -> None:
        conn: Conn | None = None
        while time.perf_counter() < end:
            conn = await one_request(conn, port, request, tally, t0, budget)
            if conn is None:
                await asyncio.sleep(0.001)  # a refused connect must not spin
        if conn is not None:
            conn.close()

    await asyncio.gather(*(client() for _ in range(connections)))
    return tally


async def open_loop(port: int, request: bytes, rate: float, duration: float, max_open: int,
                    budget: int) -> tuple[Tally, int, float, int]:
    """Requests due at t0 + i / rate whatever the answers, each on a free connection or a new one.

    Returns the tally, the requests sent, the seconds the sending took (from the first due time
    to the last send) and the requests not sent because ``max_open`` connections were all busy.
    """
    tally = Tally()
    free: deque[Conn] = deque()
    busy = 0
    pending: set[asyncio.Task[None]] = set()
    skipped = 0

    async def run(conn: Conn | None) -> None:
        nonlocal busy
        kept = await one_request(conn, port, request, tally, t0, budget)
        busy -= 1
        if kept is not None:
            free.append(kept)

    total = max(1, int(rate * duration))
    t0 = time.perf_counter() + 0.05
    for i in range(total):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        elif i % 32 == 0:
            await asyncio.sleep(0)  # behind schedule: let the answers in now and then
        if not free and busy + len(free) >= max_open:
            skipped += 1
            continue
        busy += 1
        task = asyncio.create_task(run(free.pop() if free else None))
        pending.add(task)
        task.add_done_callback(pending.discard)
    sending_s = max(time.perf_counter() - t0, 1e-9)
    if pending:
        await asyncio.wait(pending, timeout=REQUEST_TIMEOUT_S + 1)
    for conn in free:
        conn.close()
    return tally, total - skipped, sending_s, skipped


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def loop_name() -> str:
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    return f"asyncio on uvloop {uvloop.__version__}"


# --------------------------------------------------------------------------- phases


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def phase_row(name: str, tally: Tally, seconds: float, cpu_s: float, capacity: float | None,
              target: float | None = None, sent: int | None = None, skipped: int = 0) -> dict[str, Any]:
    """One phase's figures. Rates count the answers that came within the ``seconds`` the phase sent
    (an overloaded server is still answering its backlog after that: counted in the totals, which
    go with the CPU time, but not in the rates); the IQR is over its whole seconds."""
    within = {kind: sum(t <= seconds for t in times) for kind, times in tally.at.items()}
    bins = Counter(int(t) for t in tally.at["ok"] if t < int(seconds))
    per_second = [bins.get(i, 0) for i in range(int(seconds))]
    iqr = [float(x) for x in np.percentile(per_second, [25, 75])] if len(per_second) >= 3 else None
    offered = (sent if sent is not None else sum(within.values())) / seconds
    served = within["ok"] / seconds
    return {
        "phase": name, "target_rps": target, "offered_rps": offered, "served_rps": served,
        "rejected_rps": within["rejected"] / seconds, "other_rps": within["other"] / seconds,
        "goodput_pct": 100 * served / capacity if capacity else None,
        "p50_ms": percentile(tally.latencies_ms, 50), "p99_ms": percentile(tally.latencies_ms, 99),
        "served_iqr": iqr, "seconds": seconds, "cpu_s": cpu_s,
        "served": tally.ok, "rejected": tally.rejected, "other": tally.other, "kinds": dict(tally.kinds),
        "connections_opened": tally.connections, "skipped_no_connection": skipped,
        "closed_after": {str(k): v for k, v in tally.closed_after.items()},
        "max_response_bytes": tally.max_response, "over_budget": tally.over_budget,
        "generator_short": target is not None and offered < 0.95 * target,
    }


def measure(pid: int, work: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T, float]:
    """``work(*args, **kwargs)`` and the server's CPU seconds meanwhile."""
    before = proc_cpu_s(pid)
    result = work(*args, **kwargs)
    return result, proc_cpu_s(pid) - before


def model_curve(model: str, pid: int, port: int, args: argparse.Namespace, budget: int) -> list[dict[str, Any]]:
    """Capacity, the open-loop points and the reject phase of one model."""
    request = infer_request(model)
    run_async(closed_loop(port, request, args.connections, min(2.0, args.duration), budget))  # warm-up
    tally, cpu = measure(pid, run_async, closed_loop(port, request, args.connections, args.duration, budget))
    capacity_row = phase_row(f"capacity (closed, {args.connections} conn.)", tally, args.duration, cpu, None)
    capacity = capacity_row["served_rps"]
    capacity_row["goodput_pct"] = 100.0
    rows = [capacity_row]
    say(f"  {model}: capacity {capacity:.0f} req/s served (closed loop, {args.connections} connections)")
    if capacity <= 0:
        say(f"  {model}: nothing served in the capacity phase; no curve ({dict(tally.kinds)})")
        return rows
    for k in args.multipliers:
        time.sleep(0.5)  # the queue drains between phases
        (tally, sent, sending_s, skipped), cpu = measure(
            pid, run_async, open_loop(port, request, k * capacity, args.duration, args.max_open, budget))
        row = phase_row(f"open {k:g}x", tally, sending_s, cpu, capacity, k * capacity, sent, skipped)
        rows.append(row)
        say(f"  {model}: open {k:g}x: target {k * capacity:.0f}/s, sent {row['offered_rps']:.0f}/s, "
            f"served {row['served_rps']:.0f}/s, 503 {row['rejected_rps']:.0f}/s")
    time.sleep(0.5)
    tally, cpu = measure(pid, run_async, closed_loop(port, request, args.reject_connections, args.duration, budget))
    rows.append(phase_row(f"reject (closed, {args.reject_connections} conn.)", tally, args.duration, cpu, capacity))
    return rows


def goodput_bound(rho: float, k: float) -> float:
    """% of capacity a CPU-bound server can still serve when offered k × capacity, a 503 costing ρ × a served request."""
    if k <= 1:
        return 100.0
    return 100 * max(0.0, (1 - k * rho) / (1 - rho)) if rho < 1 else 0.0


def rejection_cost(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What a 503 costs the server against a served request, from two phases, checked by a fit over all.

    Headline: a served request's CPU from the capacity phase (no 503 there), a 503's from the reject
    phase (nearly all 503) once its served requests are taken out at that cost. Check: least
    squares of every phase's CPU over its served, rejected (and other) counts.
    """
    capacity, reject = rows[0], rows[-1]
    if not capacity["served"] or not reject["rejected"]:
        return {"note": "no 503 in the reject phase (or nothing served at capacity): nothing to compare"}
    served = capacity["cpu_s"] / capacity["served"]
    rejected = (reject["cpu_s"] - reject["served"] * served) / (reject["rejected"] + reject["other"])
    names = [n for n in ("served", "rejected", "other") if any(r[n] for r in rows)]
    coef, *_ = np.linalg.lstsq(np.array([[r[n] for n in names] for r in rows], dtype=float),
                               np.array([r["cpu_s"] for r in rows], dtype=float), rcond=None)
    fit = {n: float(c) * 1000 for n, c in zip(names, coef, strict=True)}
    rho = rejected / served
    return {"cpu_ms_per_served": served * 1000, "cpu_ms_per_rejected": rejected * 1000, "ratio": rho,
            "reject_phase_share": reject["rejected"] / max(1, reject["served"] + reject["rejected"] + reject["other"]),
            "fit_cpu_ms": fit, "fit_ratio": fit["rejected"] / fit["served"] if "rejected" in fit and fit["served"] else None,
            "goodput_bound_pct": {k: goodput_bound(rho, k) for k in (1.5, 2.0, 3.0)}}


def run_wrk(model: str, pid: int, port: int, args: argparse.Namespace, tmp: Path, pinned: bool) -> list[dict[str, Any]]:
    wrk = shutil.which("wrk")
    if wrk is None:
        return []
    body = tmp / f"{model}.json"
    body.write_bytes(infer_body(model))
    script = tmp / f"{model}.lua"
    script.write_text(f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      f'local f = io.open("{body}", "rb")\nwrk.body = f:read("*a")\nf:close()\n')
    rows: list[dict[str, Any]] = []
    for conns in (64, 512):
        command = [wrk, "-t1", f"-c{conns}", f"-d{max(1, round(args.duration))}s", "-s", str(script),
                   f"http://{HOST}:{port}/v2/models/{model}/infer"]
        if pinned:
            command = ["taskset", "-c", str(LOAD_CORE), *command]
        done, cpu = measure(pid, subprocess.run, command, capture_output=True, text=True, check=False,
                            timeout=args.duration + 60)
        text = done.stdout
        total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b", text)
        if total is None:
            rows.append({"connections": conns, "error": (text + done.stderr)[-500:]})
            continue
        seconds = float(total.group(2)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[total.group(3)]
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
        bad = int(non2xx.group(1)) if non2xx else 0
        errors = re.search(r"Socket errors: (.*)", text)
        rows.append({"connections": conns, "served_rps": (int(total.group(1)) - bad) / seconds,
                     "non2xx_rps": bad / seconds, "socket_errors": errors.group(1) if errors else "",
                     "cpu_s": cpu})
    return rows


# --------------------------------------------------------------------------- floods


def raise_fd_limit(wanted: int) -> tuple[int, str]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    room = soft - 64  # this process's own files and the probes' sockets (the server has a limit of its own)
    if wanted > room:
        return max(0, room), f"--idle {wanted} capped to {room}: RLIMIT_NOFILE is {soft} (hard {hard})"
    return wanted, ""


def open_sockets(port: int, n: int, deadline_s: float) -> tuple[list[socket.socket], int, str]:
    """Up to ``n`` connected sockets, opened one by one (bounded: a deadline, 20 failures in a row)."""
    socks: list[socket.socket] = []
    failures = streak = 0
    deadline = time.monotonic() + deadline_s
    while len(socks) < n and time.monotonic() < deadline and streak < 20:
        s = socket.socket()
        s.settimeout(1.0)
        try:
            s.connect((HOST, port))
        except OSError:
            s.close()
            failures += 1
            streak += 1
            continue
        streak = 0
        s.setblocking(False)
        socks.append(s)
    why = "" if len(socks) == n else (f"stopped at {len(socks)}: " + ("deadline" if streak < 20 else "20 connect failures in a row"))
    return socks, failures, why


class Watch:
    """Idle sockets, and what the server did with each: still open, closed, answered first."""

    def __init__(self, socks: list[socket.socket]) -> None:
        self.open = list(socks)
        self.closed = 0
        self.statuses: Counter[str] = Counter()
        self.close_times: list[float] = []

    def poll(self, since: float) -> None:
        still = []
        for s in self.open:
            try:
                data = s.recv(65536)
            except BlockingIOError:
                still.append(s)
                continue
            except OSError:
                data = b""  # reset
            if data:
                if data.startswith(b"HTTP/"):
                    self.statuses[data[9:12].decode("latin-1")] += 1
                still.append(s)  # answered; closed once the end comes
                continue
            s.close()
            self.closed += 1
            self.close_times.append(time.monotonic() - since)
        self.open = still

    def release(self) -> None:
        for s in self.open:
            s.close()
        self.open = []


def read_head(s: socket.socket, at_least: int) -> bytes:
    """At least ``at_least`` bytes of an answer (fewer if the server closed first)."""
    buf = b""
    while len(buf) < at_least:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf


def probe(port: int, method: str, path: str, body: bytes = b"", timeout: float = 10.0) -> dict[str, Any]:
    """One request on a fresh connection: status and milliseconds, or what went wrong."""
    started = time.perf_counter()
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            s.sendall(head.encode() + body)
            first = read_head(s, 12)
        status: int | str = int(first[9:12]) if first[:5] == b"HTTP/" else f"no answer ({first[:20]!r})"
    except (OSError, ValueError) as exc:
        status = f"{type(exc).__name__}: {exc}"
    return {"status": status, "ms": (time.perf_counter() - started) * 1000}


def idle_flood(port: int, n: int, keep_alive_s: float) -> dict[str, Any]:
    socks, failures, why = open_sockets(port, n, deadline_s=120)
    opened = time.monotonic()
    watch = Watch(socks)
    watch.poll(opened)
    at_probe = {"client_open": len(watch.open), "closed_while_opening": watch.closed}
    live = probe(port, "GET", "/v2/health/live")
    infer = probe(port, "POST", "/v2/models/digits/infer", infer_body("digits"))
    deadline = opened + keep_alive_s + 3.0
    while watch.open and time.monotonic() < deadline:
        time.sleep(0.25)
        watch.poll(opened)
    result = {"asked": n, "opened": len(socks), "connect_failures": failures, "stopped": why, **at_probe,
              "live": live, "infer": infer, "closed_by_server": watch.closed, "still_open": len(watch.open),
              "statuses_sent": dict(watch.statuses), "waited_s": time.monotonic() - opened}
    watch.release()
    result["live_after"] = probe(port, "GET", "/v2/health/live")
    return result


def slowloris(port: int, n: int, header_s: float) -> dict[str, Any]:
    socks, failures, why = open_sockets(port, n, deadline_s=30)
    start = time.monotonic()
    watch = Watch(socks)
    for s in watch.open:
        with contextlib.suppress(OSError):
            s.send(f"POST /v2/models/digits/infer HTTP/1.1\r\nHost: {HOST}\r\n".encode())
    seconds = int(header_s + 5)
    for tick in range(1, seconds + 1):
        time.sleep(max(0.0, start + tick - time.monotonic()))
        for i, s in enumerate(watch.open):
            with contextlib.suppress(OSError):
                s.send(f"X-Slow-{tick}-{i}: a\r\n".encode())
        watch.poll(start)
        if not watch.open:
            break
    within = sum(t <= header_s + 1.5 for t in watch.close_times)
    result = {"asked": n, "opened": len(socks), "connect_failures": failures, "stopped": why,
              "closed_by_server": watch.closed, "closed_within_timeout_plus_1_5s": within,
              "still_open": len(watch.open), "statuses_sent": dict(watch.statuses),
              "median_close_s": float(np.median(watch.close_times)) if watch.close_times else None,
              "watched_s": time.monotonic() - start}
    watch.release()
    return result


# --------------------------------------------------------------------------- amplification


def amplification(port: int, pid: int, copies: int, rows: int, cap: int) -> dict[str, Any]:
    """A minilm request asking for the same output ``copies`` times; reads (and counts) at most ``cap`` bytes."""
    body = infer_body("minilm", rows=rows, outputs=copies)
    rss_before = peak_rss_mb(pid)
    started = time.perf_counter()
    got, status, message, length = 0, None, "", None
    try:
        with socket.create_connection((HOST, port), timeout=120) as s:
            s.sendall(request_bytes("/v2/models/minilm/infer", body))
            buf = b""
            while b"\r\n\r\n" not in buf and len(buf) < 65536:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
            head, _, rest = buf.partition(b"\r\n\r\n")
            status = int(head[9:12]) if head[:5] == b"HTTP/" else None
            match = re.search(rb"\r\ncontent-length:\s*(\d+)", head.lower())
            length = int(match.group(1)) if match else None
            got, first = len(rest), rest[:300]
            deadline = time.monotonic() + 120
            while (length is None or got < length) and got < cap and time.monotonic() < deadline:
                chunk = s.recv(MiB)
                if not chunk:
                    break
                got += len(chunk)
            message = first.decode("utf-8", "replace") if status != 200 else ""
    except (OSError, ValueError) as exc:
        message = f"{type(exc).__name__}: {exc}"
    rss_after = peak_rss_mb(pid)
    return {"copies": copies, "rows": rows, "request_bytes": len(body), "status": status,
            "response_bytes": length if length is not None else got, "read_bytes": got,
            "read_capped": got >= cap, "seconds": time.perf_counter() - started, "message": message,
            "peak_rss_mb_before": rss_before, "peak_rss_mb_after": rss_after}


# --------------------------------------------------------------------------- printing


def table(head: list[str], lines: list[list[str]]) -> str:
    widths = [max(len(x[i]) for x in [head, *lines]) for i in range(len(head))]

    def fmt(row: list[str]) -> str:
        return "  ".join(x.ljust(widths[0]) if i == 0 else x.rjust(widths[i]) for i, x in enumerate(row))

    return "\n".join([fmt(head), "  ".join("-" * w for w in widths), *map(fmt, lines)])


def num(value: float | None, spec: str = ".0f") -> str:
    return "—" if value is None else format(value, spec)


def print_curve(model: str, rows: list[dict[str, Any]], cost: dict[str, Any]) -> None:
    head = ["phase", "target/s", "sent/s", "200/s (IQR 1-s)", "503/s", "other/s", "goodput", "bound", "p50 ms",
            "p99 ms", "new conn.", "not sent"]
    lines = []
    capacity = rows[0]["served_rps"]
    for r in rows:
        spread = r["served_iqr"]
        iqr = f"{r['served_rps']:.0f}" + (f" ({spread[0]:.0f}–{spread[1]:.0f})" if spread else " (—)")
        sent = num(r["offered_rps"]) + (" *" if r["generator_short"] else "")
        bound = (f"{goodput_bound(cost['ratio'], r['offered_rps'] / capacity):.0f}%"
                 if "ratio" in cost and r["target_rps"] and capacity else "")
        lines.append([r["phase"], num(r["target_rps"]), sent, iqr, num(r["rejected_rps"]), num(r["other_rps"]),
                      num(r["goodput_pct"], ".0f") + "%", bound, num(r["p50_ms"], ".2f"), num(r["p99_ms"], ".2f"),
                      str(r["connections_opened"]), str(r["skipped_no_connection"])])
    say(f"\n== {model}: goodput under overload (goodput: 200/s ÷ capacity; bound: what a CPU-bound server "
        "can serve at the rate sent, from the rejection cost below) ==")
    say(table(head, lines))
    for r in rows:
        if r["generator_short"]:
            why = (f"{r['skipped_no_connection']} requests found all --max-open connections busy and were not sent"
                   if r["skipped_no_connection"] else "one Python core could not send faster")
            say(f"  * {r['phase']}: the generator sent {r['offered_rps']:.0f}/s of the {r['target_rps']:.0f}/s "
                f"target ({why}); 'sent/s' is what was really offered")
    kinds, closed = Counter[str](), Counter[str]()
    for r in rows:
        kinds.update(r["kinds"])
        closed.update(r["closed_after"])
    if kinds:
        say(f"  other answers: {dict(kinds)}")
    if closed:
        say(f"  answers after which the server closed the connection, by status: {dict(closed)}")


def print_cost(model: str, cost: dict[str, Any]) -> None:
    if "ratio" not in cost:
        say(f"  {model}: {cost['note']}")
        return
    fit = ", ".join(f"{n} {v:.3f}" for n, v in cost["fit_cpu_ms"].items())
    bound = ", ".join(f"{k:g}x {v:.0f}%" for k, v in cost["goodput_bound_pct"].items())
    say(f"  {model}: a served request {cost['cpu_ms_per_served']:.3f} ms of server CPU (capacity phase), a 503 "
        f"{cost['cpu_ms_per_rejected']:.3f} ms (reject phase, {cost['reject_phase_share']:.0%} answered 503): "
        f"a 503 costs {cost['ratio']:.2f}x a served request (fit over all phases, ms: {fit}; ratio "
        f"{num(cost['fit_ratio'], '.2f')}x). Goodput bound at k x capacity: {bound}")


def print_floods(idle: dict[str, Any], loris: dict[str, Any], note: str) -> None:
    say("\n== connection floods ==")
    if note:
        say(f"  {note}")
    stopped = f" ({idle['stopped']})" if idle["stopped"] else ""
    say(f"  idle: {idle['opened']} of {idle['asked']} opened{stopped}; while open ({idle['client_open']} still "
        f"open on this side): live {idle['live']['status']} in {idle['live']['ms']:.0f} ms, infer "
        f"{idle['infer']['status']} in {idle['infer']['ms']:.0f} ms")
    say(f"  idle: closed by the server {idle['closed_by_server']} of {idle['opened']} "
        f"({idle['closed_while_opening']} while opening), still open {idle['still_open']} after "
        f"{idle['waited_s']:.1f} s; answers sent first: {idle['statuses_sent'] or 'none'}; live afterwards "
        f"{idle['live_after']['status']}")
    say(f"  slowloris: {loris['opened']} sockets, a header line a second: closed {loris['closed_by_server']} "
        f"({loris['closed_within_timeout_plus_1_5s']} within the header timeout + 1.5 s, median "
        f"{num(loris['median_close_s'], '.1f')} s), still open {loris['still_open']} after "
        f"{loris['watched_s']:.0f} s; answers: {loris['statuses_sent'] or 'none'}")


# --------------------------------------------------------------------------- driver


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repository", type=Path, help="repository holding digits and minilm (built when missing)")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--duration", type=float, help="seconds per load phase (default 10; --quick: 2)")
    p.add_argument("--connections", type=int, default=16, help="closed-loop connections for capacity")
    p.add_argument("--reject-connections", type=int, default=256)
    p.add_argument("--multipliers", default="0.5,1,1.5,2,3", help="open-loop rates, × capacity")
    p.add_argument("--max-open", type=int, default=2048, help="open-loop connections at most")
    p.add_argument("--idle", type=int, help="idle sockets to open, up to 20,000 (default 2,000; --quick: 300)")
    p.add_argument("--slowloris", type=int, help="slowloris sockets (default 200; --quick: 30)")
    p.add_argument("--amp-copies", type=int, default=4000)
    p.add_argument("--amp-cap-mb", type=float, help="read at most this of the amplified answer (default 2048; --quick: 256)")
    p.add_argument("--max-response-mb", type=float, default=64.0, help="the response budget given to the server")
    p.add_argument("--server-args", default="", help="more `inferno serve` options: --server-args='--max-connections 500'")
    p.add_argument("--quick", action="store_true", help="a few seconds per phase, fewer sockets: checks that the script works")
    p.add_argument("--json", type=Path, help="results file (default benchmarks/results/hardening-<timestamp>.json)")
    args = p.parse_args(argv)
    for name, full, quick in (("duration", 10.0, 2.0), ("idle", 2000, 300), ("slowloris", 200, 30),
                              ("amp_cap_mb", 2048.0, 256.0)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    try:
        args.multipliers = [float(x) for x in args.multipliers.split(",") if x.strip()]
    except ValueError:
        p.error(f"--multipliers: expected numbers like 0.5,1,2, got {args.multipliers!r}")
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    if set(args.models) - set(MODELS):
        p.error(f"--models: expected some of {', '.join(MODELS)}, got {args.models}")
    if args.duration <= 0 or min(args.connections, args.reject_connections, args.max_open) < 1 or args.idle < 0:
        p.error("--duration and the connection counts must be > 0, --idle >= 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command_line = shlex.join(["python", *sys.argv])
    cores = os.sched_getaffinity(0)
    pinned = {SERVER_CORE, LOAD_CORE} <= cores
    say(f"{command_line}\n1-min load average {os.getloadavg()[0]:.2f}; cores usable: {sorted(cores)}; "
        f"load generator: {loop_name()}, raw HTTP/1.1 keep-alive connections")
    if not pinned:
        say(f"note: cores {SERVER_CORE} and {LOAD_CORE} are not both usable: server and load run unpinned, "
            "on the same cores (the figures then measure the pair, not the server)")
    idle, fd_note = raise_fd_limit(args.idle)
    budget = int(args.max_response_mb * MiB)
    record: dict[str, Any] = {"benchmark": "hardening", "command": command_line, "pinned": pinned,
                              "date": datetime.now(UTC).isoformat(timespec="seconds"),
                              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="inferno-hardening-") as tmp_name:
        tmp = Path(tmp_name)
        repo = ensure_repository(args, tmp)
        port = free_port()
        command, missing = server_command(repo, port, args, pinned)
        record["server"] = {"command": shlex.join(command), "flags_not_supported": missing}
        say(f"server: {shlex.join(command)}")
        if missing:
            say(f"  this server has no {', '.join(missing)}: left out (its defaults apply)")
        with serving(command, port, tmp / "server.log") as pid:
            if pinned:
                os.sched_setaffinity(0, {LOAD_CORE})
            record |= run_phases(args, pid, port, budget, tmp, pinned, idle, fd_note)
    record["benchmark_s"] = time.perf_counter() - started
    say(f"\nbenchmark took {record['benchmark_s']:.0f} s; 1-min load average {os.getloadavg()[0]:.2f} at the end")
    path = args.json or RESULTS / f"hardening-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    say(f"results: {path}")


def run_phases(args: argparse.Namespace, pid: int, port: int, budget: int, tmp: Path, pinned: bool,
               idle: int, fd_note: str) -> dict[str, Any]:
    out: dict[str, Any] = {"curves": {}, "rejection_cost": {}, "wrk": {}}
    for model in args.models:
        rows = model_curve(model, pid, port, args, budget)
        out["curves"][model] = rows
        out["rejection_cost"][model] = rejection_cost(rows)
        out["wrk"][model] = run_wrk(model, pid, port, args, tmp, pinned)
    amp = amplification(port, pid, args.amp_copies, 64, int(args.amp_cap_mb * MiB))
    out["amplification"] = amp
    keep_alive = float(SERVER_FLAGS["--keep-alive-timeout-s"])
    header = float(SERVER_FLAGS["--header-timeout-s"])
    out["idle"] = idle_flood(port, idle, keep_alive)
    out["slowloris"] = slowloris(port, args.slowloris, header)
    for model in args.models:
        print_curve(model, out["curves"][model], out["rejection_cost"][model])
    say("\n== what a rejection costs (server CPU from /proc/PID/stat around each phase) ==")
    for model in args.models:
        print_cost(model, out["rejection_cost"][model])
    if shutil.which("wrk") is None:
        say("\nwrk: not installed (closed loop at 64 and 512 connections skipped)")
    for model, rows in out["wrk"].items():
        for r in rows:
            say(f"  wrk {model} c={r['connections']}: " + (r.get("error") or f"served {r['served_rps']:.0f}/s, "
                f"non-2xx {r['non2xx_rps']:.0f}/s; socket errors {r['socket_errors'] or 'none'}"))
    largest = max([amp["response_bytes"] or 0] + [r["max_response_bytes"] for rows in out["curves"].values()
                                                  for r in rows])
    over = (sum(r["over_budget"] for rows in out["curves"].values() for r in rows)
            + int((amp["response_bytes"] or 0) > budget))
    out["largest_response_bytes"], out["responses_over_budget"] = largest, over
    say(f"\n== amplification (budget {budget / MiB:g} MiB) ==")
    say(f"  minilm, {amp['rows']} rows, outputs [embedding] x {amp['copies']} ({amp['request_bytes'] / 1024:.0f} kB "
        f"request): status {amp['status']}, response {amp['response_bytes'] / MiB:.2f} MiB"
        f"{' (read capped)' if amp['read_capped'] else ''} in {amp['seconds']:.1f} s; server peak RSS "
        f"{num(amp['peak_rss_mb_before'])} → {num(amp['peak_rss_mb_after'])} MB"
        + (f"; {amp['message'][:200]}" if amp["message"] else ""))
    say(f"  largest response of the run: {largest / MiB:.3f} MiB; responses over the budget: {over}")
    print_floods(out["idle"], out["slowloris"], fd_note)
    return out


if __name__ == "__main__":
    main()
