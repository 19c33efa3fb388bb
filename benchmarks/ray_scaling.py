"""``inferno serve --ray``: throughput at 1 and 2 replicas, the cost of the Ray hop, per-replica figures.

Every contender serves the same plan (the ``minilm`` plan of ``inferno accelerate``, one
runtime thread per replica) and answers the same Open Inference Protocol JSON; the same load
generator (``inferno bench``: closed loop, one bundled sentence of at most 16 tokens per
request, loopback) loads each in turn at every concurrency level. The machinery (server
start, readiness wait, stop, load generation, CPU accounting, the raw sweep) is
``benchmarks/serving.py``'s, imported, so the figures compare with its own.

contenders
    ``inferno``: plain ``inferno serve REPO --model minilm --threads 1 --instances 1`` plus
    ``--inferno-args`` (default ``--max-batch-size 64``): serving.py's inferno, the baseline.
    ``ray-1``: the same command plus ``--ray --replicas 1 --replica-cpus X`` (``X`` is
    ``--replica-cpus``, default 1): inferno's server (decode, batching, cache, metrics, drift)
    stays in the ``inferno serve`` process, the ingress; the model runs on one Ray Serve
    replica with one runtime thread; each batch crosses by one ``DeploymentHandle`` call.
    A local Ray instance is started by the server and stopped with it. ``--replica-cpus`` is
    passed because Ray sees ``os.cpu_count()`` CPUs even under ``taskset``: the replica must
    fit in what Ray thinks it has, whatever the pinning.
    ``ray-2``: ``--ray --replicas 2``, one runtime thread and ``X`` Ray CPUs each.
    ``ray-peer``: ``benchmarks/peers/ray_peer.py`` as serving.py starts it: plain Ray Serve,
    HTTP proxy, FastAPI ingress in the replica, ``@serve.batch`` (cap ``--peer-batch``,
    ``auto``: the raw runtime's best batch size, measured once per mode), one replica.

pinning (``--pinned``, the headline; ``--unpinned``; ``--both``, the default)
    Pinned, each server with everything it spawns (Ray's raylet, GCS, controller and
    replicas included) runs under ``taskset -c 0``, the load generator and this script on
    core 1: every contender gets the same CPU budget, one core, which is what the overhead
    checks need. ``ray-2`` pinned puts both replicas (and the ingress) on core 0: there,
    ray-2 ÷ ray-1 is the cost of a second replica on the same core, not scaling. Unpinned
    (2 cores, shared with the load generator), ray-2 ÷ ray-1 is what a second core buys.

measurement
    One server up at a time. Per level, an unrecorded ``inferno bench`` run of ``--warmup``
    seconds, then the measured run of ``--duration`` seconds. Around the measured run the
    CPU time (user + system) of every process of the server's tree is read and split by
    process: the ingress (the ``inferno serve`` process itself, its Ray driver threads
    included; for ray-peer, its driver plus Ray's HTTP proxy actor ``ray::ProxyActor``),
    the replicas (``ray::ServeReplica...``) and the rest of Ray (raylet, GCS, Serve
    controller, dashboard and agents); each part ÷ requests is CPU s/request. ``--rounds N``
    (default 3) repeats everything with the contenders' order rotating; values are medians
    over rounds, ratios medians of per-round ratios with their min–max over rounds.

figures and checks
    Per mode a table (req/s, p50/p99, errors, CPU ms/request in total and by part, the
    ingress's share of the server's CPU, req/s per replica, replicas seen), the ratios
    ray-1 ÷ inferno, ray-1 ÷ ray-peer and ray-2 ÷ ray-1 per level, and the per-replica basis
    for a projection to N nodes (README: "ray_scaling.py"). The acceptance checks (issue 18),
    on the pinned figures at concurrency 64: ray-1 ≥ 80% of plain ``inferno serve`` and
    ≥ 3× the ray peer.

Reproduce (repository root, dev environment plus ``pip install -r
benchmarks/requirements-serving.txt``: Ray Serve, FastAPI)::

    python benchmarks/ray_scaling.py --repository model_repository        # pinned, then unpinned
    python benchmarks/ray_scaling.py --pinned --duration 20 --rounds 5    # the checks, steadier
    python benchmarks/ray_scaling.py --pinned --duration 2 --warmup 1 --rounds 1 --concurrency 16  # smoke

Results go to ``benchmarks/results/ray_scaling-<timestamp>.json``. ``inferno serve --ray``
needs about 12 s to be ready (Ray start + deploy; serving.py's readiness wait allows 240 s);
every server, and the Ray instance it started, is stopped after its turn, also on Ctrl-C,
SIGTERM or an error, and any process of its tree still alive then is killed by pid. Absolute
numbers on a shared machine mean little: read the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

# run as a script, this folder is on sys.path (as peers/ is for the peers' _common); imported
# from elsewhere, it may not be
sys.path.insert(0, str(Path(__file__).resolve().parent))
import serving as sv

CONTENDERS = ("inferno", "ray-1", "ray-2", "ray-peer")
LABELS = {
    "inferno": "inferno serve",
    "ray-1": "inferno serve --ray, 1 replica",
    "ray-2": "inferno serve --ray, 2 replicas",
    "ray-peer": "Ray Serve @serve.batch (peer)",
}
REPLICAS = {"inferno": 1, "ray-1": 1, "ray-2": 2, "ray-peer": 1}
"""Model replicas (runtime sessions) of each contender: req/s per replica divides by this."""
ON_RAY = ("ray-1", "ray-2", "ray-peer")
RATIOS = (("ray-1", "inferno"), ("ray-1", "ray-peer"), ("ray-2", "ray-1"))
CHECK_LEVEL = 64
MIN_VS_INFERNO, MIN_VS_PEER = 0.80, 3.0
PARTS = ("ingress", "replicas", "ray_other")
LOG_NOTE = re.compile(r"error|exception|traceback|warning|failed|killed", re.IGNORECASE)
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d[,.]\d+\s*")

say = sv.say
OURS: dict[int, psutil.Process] = {}
"""Every process met in a server's tree during this run (what the final check calls ours)."""


# --------------------------------------------------------------------------- processes


def part_of(proc: psutil.Process, root: int) -> str:
    """Which part of a server a process is: the ingress, a replica, or the rest of Ray."""
    if proc.pid == root:
        return "ingress"
    title = " ".join(proc.cmdline())
    if "ServeReplica" in title:
        return "replicas"
    return "ingress" if "ProxyActor" in title else "ray_other"


def cpu_by_part(pid: int, seen: dict[int, psutil.Process]) -> tuple[dict[str, float], int]:
    """CPU seconds of the server's live tree by part, and how many replica processes it has.

    Every process met is remembered in ``seen``, so that whatever outlives the server's stop
    can be killed by pid.
    """
    parts = dict.fromkeys(PARTS, 0.0)
    replicas = 0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return parts, 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            seen.setdefault(p.pid, p)
            times = p.cpu_times()
            part = part_of(p, pid)
            parts[part] += times.user + times.system
            replicas += part == "replicas"
    return parts, replicas


def kill_left(seen: dict[int, psutil.Process]) -> list[str]:
    """Kill (by pid) every remembered process still running; say which they were."""
    left = []
    for p in seen.values():
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            if p.is_running():  # psutil checks the create time: a reused pid is not ours
                left.append(f"{p.pid} {p.name()}")
                p.kill()
    psutil.wait_procs(list(seen.values()), timeout=5)
    return left


def ray_daemons() -> dict[int, str]:
    """Running raylet and gcs_server processes (this script's or anyone's), by pid."""
    return {p.pid: p.info["name"] for p in psutil.process_iter(["name"])
            if p.info["name"] in ("raylet", "gcs_server")}


def log_notes(log: Path, limit: int = 8) -> list[str]:
    """The distinct error/warning lines of a server's log (time stamps dropped), first ones first."""
    if not log.exists():
        return []
    notes: list[str] = []
    for line in log.read_text("utf-8", "replace").splitlines():
        text = TIMESTAMP.sub("", re.sub(r"\x1b\[[0-9;]*m", "", line)).strip()
        if LOG_NOTE.search(text) and text not in notes:
            notes.append(text)
    return notes[:limit] + ([f"... and {len(notes) - limit} more"] if len(notes) > limit else [])


@contextlib.contextmanager
def server(
    command: list[str], key: str, log_dir: Path, seen: dict[int, psutil.Process]
) -> Iterator[tuple[int, str]]:
    """serving.running (start, wait until ready, stop), then a sweep of its tree by pid."""
    try:
        with sv.running(command, key, log_dir) as (pid, url):
            cpu_by_part(pid, seen)
            yield pid, url
    finally:
        OURS.update(seen)
        left = kill_left(seen)
        if left:
            say(f"  WARNING: {key} left {len(left)} process(es) running after its stop, killed: "
                + ", ".join(left))


# --------------------------------------------------------------------------- one mode


@dataclass(frozen=True)
class Sample:
    """One contender at one level in one round: serving.py's point plus the CPU split."""

    point: sv.Point
    cpu_s: dict[str, float]
    """CPU seconds of each part over the measured run."""
    replicas_seen: int

    def per_request(self, part: str) -> float | None:
        n = self.point.requests
        return self.cpu_s[part] / n if n else None


@dataclass
class Mode:
    pinned: bool
    peer_batch: int = 0
    ceiling: sv.Ceiling | None = None
    rounds: list[dict[str, dict[int, Sample]]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    commands: dict[str, str] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)
    """Error/warning lines of each contender's server logs."""

    @property
    def name(self) -> str:
        return "pinned" if self.pinned else "unpinned"


def server_command(key: str, args: argparse.Namespace, peer_batch: int) -> list[str]:
    """How to start contender ``key`` (``{port}`` is filled in at start)."""
    if key == "ray-peer":
        return sv.server_command("ray", args, peer_batch)
    command = sv.server_command("inferno", args, peer_batch)
    if key == "inferno":
        return command
    return [*command, "--ray", "--replicas", str(REPLICAS[key]),
            "--replica-cpus", f"{args.replica_cpus:g}"]


def missing(key: str) -> str | None:
    packages = ("ray", "fastapi") if key == "ray-peer" else ("ray",) if key in ON_RAY else ()
    for package in packages:
        if importlib.util.find_spec(package) is None:
            return f"{package} is not installed (pip install -r benchmarks/requirements-serving.txt)"
    return None


def measure(key: str, pid: int, url: str, level: int, args: argparse.Namespace,
            core: int | None, seen: dict[int, psutil.Process]) -> Sample:
    sv.warm_up(key, url, level, args, core)
    before, _ = cpu_by_part(pid, seen)
    point = sv.load_point(key, pid, url, level, args, core, warm=False)
    after, replicas = cpu_by_part(pid, seen)
    return Sample(point, {k: max(0.0, after[k] - before[k]) for k in PARTS}, replicas)


def run_mode(args: argparse.Namespace, pinned: bool, log_dir: Path) -> Mode:
    mode = Mode(pinned)
    server_core = sv.SERVER_CORE if pinned else None
    load_core = sv.LOAD_CORE if pinned else None
    for key in args.contenders:
        reason = missing(key)
        if reason:
            mode.skipped[key] = reason
            say(f"  skipping {key}: {reason}")
    servers = [k for k in args.contenders if k not in mode.skipped]
    if "ray-peer" in servers and args.peer_batch == "auto":
        mode.ceiling = sv.measure_raw(args, server_core)
        say(f"{mode.name}: raw runtime best batch {mode.ceiling.best_batch} "
            f"({mode.ceiling.rps:.1f} sentences/s): the ray peer's batch cap")
    mode.peer_batch = mode.ceiling.best_batch if mode.ceiling else (
        64 if args.peer_batch == "auto" else int(args.peer_batch))
    mode.commands = {
        k: shlex.join(sv.pin(server_command(k, args, mode.peer_batch), server_core))
        for k in servers
    }
    for index in range(args.rounds):
        say(f"{mode.name}, round {index + 1}/{args.rounds}")
        results: dict[str, dict[int, Sample]] = {}
        shift = index % len(servers) if servers else 0
        for key in servers[shift:] + servers[:shift]:
            if key in mode.skipped:
                continue
            command = sv.pin(server_command(key, args, mode.peer_batch), server_core)
            seen: dict[int, psutil.Process] = {}
            port = ""
            try:
                with server(command, key, log_dir, seen) as (pid, url):
                    port = url.rsplit(":", 1)[1]
                    results[key] = {}
                    for level in args.concurrency:
                        s = measure(key, pid, url, level, args, load_core, seen)
                        results[key][level] = s
                        p = s.point
                        say(f"  {key:>8} c={level:<3} {p.rps:8.1f} req/s  p50 {sv._ms(p.p50_ms)}  "
                            f"p99 {sv._ms(p.p99_ms)}  errors {p.errors}"
                            + (f"  replicas {s.replicas_seen}" if key in ON_RAY else ""))
            except RuntimeError as exc:
                mode.skipped[key] = str(exc)
                results.pop(key, None)
                say(f"  {key} FAILED, left out of this mode: {exc}")
            for note in log_notes(log_dir / f"{key}-{port}.log") if port else []:
                if note not in mode.notes.setdefault(key, []):
                    mode.notes[key].append(note)
        mode.rounds.append(results)
    return mode


# --------------------------------------------------------------------------- summaries


def _spread(values: list[float]) -> dict[str, Any]:
    return {"median": sv._median(list(values)), "min": min(values, default=None),
            "max": max(values, default=None), "rounds": len(values)}


def summarize(mode: Mode, levels: list[int]) -> list[dict[str, Any]]:
    """One row per (contender, level): medians over rounds."""
    rows = []
    for key in [k for k in CONTENDERS if any(k in r for r in mode.rounds)]:
        for level in levels:
            samples = [r[key][level] for r in mode.rounds if key in r and level in r[key]]
            if not samples:
                continue
            pts = [s.point for s in samples]
            per = {part: sv._median([s.per_request(part) for s in samples]) for part in PARTS}
            total = [sum(s.cpu_s.values()) for s in samples]
            share = [s.cpu_s["ingress"] / t if t else None for s, t in zip(samples, total, strict=True)]
            rps = sv._median([p.rps for p in pts])
            rows.append({
                "contender": key,
                "level": level,
                "rps": rps,
                "rps_per_replica": rps / REPLICAS[key] if rps is not None else None,
                "p50_ms": sv._median([p.p50_ms for p in pts]),
                "p99_ms": sv._median([p.p99_ms for p in pts]),
                "errors": sum(p.errors for p in pts),
                "requests": sum(p.requests for p in pts),
                "cpu_s_per_request": sv._median([p.cpu_s_per_request for p in pts]),
                "ingress_s_per_request": per["ingress"],
                "replicas_s_per_request": per["replicas"],
                "ray_other_s_per_request": per["ray_other"],
                "ingress_share": sv._median(share),
                "replicas_seen": max(s.replicas_seen for s in samples),
            })
    return rows


def ratios(mode: Mode, levels: list[int]) -> list[dict[str, Any]]:
    """Each RATIOS pair per level: per-round req/s ratios, their median and min–max."""
    out = []
    for top, bottom in RATIOS:
        for level in levels:
            per_round = [
                r[top][level].point.rps / r[bottom][level].point.rps
                for r in mode.rounds
                if level in r.get(top, {}) and level in r.get(bottom, {})
                and r[bottom][level].point.rps
            ]
            if per_round:
                out.append({"ratio": f"{top} ÷ {bottom}", "level": level,
                            "per_round": per_round, **_spread(per_round)})
    return out


def _num(value: float | None, fmt: str, scale: float = 1.0, unit: str = "") -> str:
    return "—" if value is None else format(value * scale, fmt) + unit


def table(rows: list[dict[str, Any]]) -> str:
    head = ["contender", "conc.", "req/s", "p50 ms", "p99 ms", "errors", "CPU ms/req",
            "ingress", "replicas", "Ray other", "ingress share", "req/s/replica", "replicas"]
    lines = []
    for r in rows:
        # plain inferno serve is one process doing everything: only its total means something
        split = r["contender"] in ON_RAY
        lines.append([
            LABELS[r["contender"]],
            str(r["level"]),
            _num(r["rps"], ".1f"),
            _num(r["p50_ms"], ".2f"),
            _num(r["p99_ms"], ".2f"),
            str(r["errors"]),
            _num(r["cpu_s_per_request"], ".2f", 1000),
            _num(r["ingress_s_per_request"] if split else None, ".2f", 1000),
            _num(r["replicas_s_per_request"] if split else None, ".2f", 1000),
            _num(r["ray_other_s_per_request"] if split else None, ".2f", 1000),
            _num(r["ingress_share"] if split else None, ".0%"),
            _num(r["rps_per_replica"], ".1f"),
            str(r["replicas_seen"]) if split else "—",
        ])
    return sv.grid(head, lines)


def ratio_table(found: list[dict[str, Any]]) -> str:
    head = ["ratio (req/s)", "conc.", "median", "min–max over rounds", "rounds"]
    lines = [
        [r["ratio"], str(r["level"]), f"{r['median']:.2f}x",
         f"{r['min']:.2f}–{r['max']:.2f}x", str(r["rounds"])]
        for r in found
    ]
    return sv.grid(head, lines) if lines else "  (no pair measured in the same round)"


def basis(mode: Mode, rows: list[dict[str, Any]]) -> list[str]:
    """The per-replica figures a projection to N nodes can rest on, at the highest level."""
    out = []
    for r in rows:
        if r["contender"] not in ("ray-1", "ray-2") or r["level"] != max(x["level"] for x in rows):
            continue
        ingress, replica = r["ingress_s_per_request"], r["replicas_s_per_request"]
        line = (
            f"  {r['contender']} c={r['level']}: {_num(r['rps_per_replica'], '.1f')} req/s per "
            f"replica; server CPU {_num(r['cpu_s_per_request'], '.2f', 1000)} ms/req = ingress "
            f"{_num(ingress, '.2f', 1000)} + replicas {_num(replica, '.2f', 1000)} + Ray other "
            f"{_num(r['ray_other_s_per_request'], '.2f', 1000)} (ingress "
            f"{_num(r['ingress_share'], '.0%')})"
        )
        if ingress and replica:
            line += (f"; CPU-bound ceilings: one replica core ≈ {1 / replica:.0f} req/s, the "
                     f"ingress (one process) ≈ {1 / ingress:.0f} req/s on a core of its own")
        out.append(line)
    if out and mode.pinned:
        out.append("  (pinned: ingress, Ray and every replica share core 0)")
    return out


def checks(rows_of: dict[str, list[dict[str, Any]]], ratios_of: dict[str, list[dict[str, Any]]]
           ) -> list[dict[str, Any]]:
    """Issue 18's checks, on the pinned figures at concurrency CHECK_LEVEL."""
    found = {r["ratio"]: r for r in ratios_of.get("pinned", []) if r["level"] == CHECK_LEVEL}
    out = []
    for pair, goal in (("ray-1 ÷ inferno", MIN_VS_INFERNO), ("ray-1 ÷ ray-peer", MIN_VS_PEER)):
        r = found.get(pair)
        value = r["median"] if r else None
        target = f"≥ {goal:.0%}" if goal < 1 else f"≥ {goal:g}×"
        out.append({
            "check": f"pinned c={CHECK_LEVEL}: {pair} {target}",
            "value": value,
            "passed": None if value is None else value >= goal,
            "detail": f"{value:.2f}x (rounds {r['min']:.2f}–{r['max']:.2f}x)" if r else "not measured",
        })
    return out


def print_mode(mode: Mode, rows: list[dict[str, Any]], found: list[dict[str, Any]],
               args: argparse.Namespace) -> None:
    where = (f"every server (with Ray and its replicas) on core {sv.SERVER_CORE}, load "
             f"generator on core {sv.LOAD_CORE}" if mode.pinned else "nothing pinned (2 cores shared)")
    say(f"\n== {mode.name}: {where}; one runtime thread per replica, --replica-cpus "
        f"{args.replica_cpus:g}; {args.duration:g} s per level after {args.warmup:g} s warm-up; "
        f"{args.rounds} round(s), medians; ray peer batches up to {mode.peer_batch} ==")
    if mode.pinned and "ray-2" in args.contenders:
        say("  note: pinned, ray-2's two replicas share core 0 with the ingress: ray-2 ÷ ray-1 "
            "here is the cost of a second replica on one core, not scaling (see unpinned)")
    for key, reason in mode.skipped.items():
        say(f"  left out {key}: {reason.splitlines()[0]}")
    say("  CPU ms/req: the server's whole process tree; ingress: the server process itself "
        "(ray-peer: its driver + Ray's HTTP proxy); replicas: ray::ServeReplica processes; Ray "
        "other: raylet, GCS, controller, agents")
    say("\n" + table(rows))
    say("\n" + ratio_table(found))
    lines = basis(mode, rows)
    if lines:
        say("\nper-replica basis for a projection to N nodes:")
        for line in lines:
            say(line)
    for key, notes in mode.notes.items():
        if notes:
            say(f"\n  {key}'s server log, errors and warnings:")
            for note in notes:
                say(f"    {note[:200]}")


# --------------------------------------------------------------------------- driver


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repository", type=Path, default=Path("model_repository"),
                   help="repository with (or to get) the minilm plan (default model_repository)")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per level")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per level")
    p.add_argument("--raw-seconds", type=float, default=3.0,
                   help="timed seconds per raw batch size (the ray peer's --peer-batch auto)")
    p.add_argument("--concurrency", default="16,64")
    p.add_argument("--contenders", default=",".join(CONTENDERS))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--peer-batch", default="auto",
                   help="the ray peer's max batch size, or 'auto': the raw runtime's best")
    p.add_argument("--replica-cpus", type=float, default=1.0,
                   help="Ray CPUs per replica for ray-1 and ray-2 (default 1)")
    p.add_argument("--inferno-args", default=sv.DEFAULT_INFERNO_ARGS,
                   help=f"extra `inferno serve` options for inferno, ray-1 and ray-2; write "
                   f"--inferno-args='...'; default {sv.DEFAULT_INFERNO_ARGS!r}")
    group = p.add_mutually_exclusive_group()
    for flag, what in (
        ("pinned", f"servers on core {sv.SERVER_CORE}, load generator on core {sv.LOAD_CORE}"),
        ("unpinned", "nothing pinned"),
        ("both", "pinned (the checks), then unpinned: the default"),
    ):
        group.add_argument(f"--{flag}", dest="modes", action="store_const", const=flag, help=what)
    p.add_argument("--logs", type=Path,
                   help="keep the servers' logs in this folder (default: a temporary one)")
    p.add_argument("--json", type=Path,
                   help="results file (default benchmarks/results/ray_scaling-<timestamp>.json)")
    args = p.parse_args(argv)
    args.modes = args.modes or "both"
    try:
        args.concurrency = [int(x) for x in args.concurrency.split(",") if x.strip()]
    except ValueError:
        p.error(f"--concurrency: expected whole numbers like 16,64, got {args.concurrency!r}")
    args.contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = [c for c in args.contenders if c not in CONTENDERS]
    if unknown:
        p.error(f"--contenders: unknown {unknown}; expected some of {', '.join(CONTENDERS)}")
    if args.peer_batch != "auto" and not args.peer_batch.isdigit():
        p.error(f"--peer-batch: expected 'auto' or a whole number, got {args.peer_batch!r}")
    if min(args.duration, args.raw_seconds, args.rounds, args.replica_cpus) <= 0 or args.warmup < 0:
        p.error("--duration, --raw-seconds, --rounds and --replica-cpus must be > 0, --warmup >= 0")
    if not args.concurrency or min(args.concurrency) < 1:
        p.error("--concurrency: expected levels >= 1")
    cores = os.sched_getaffinity(0)
    if args.modes != "unpinned" and not {sv.SERVER_CORE, sv.LOAD_CORE} <= cores:
        if args.modes == "pinned":
            p.error(f"--pinned needs cores {sv.SERVER_CORE} and {sv.LOAD_CORE}; this process "
                    f"may use {sorted(cores)}")
        say(f"note: cores {sv.SERVER_CORE} and {sv.LOAD_CORE} are not both usable: unpinned only")
        args.modes = "unpinned"
    return args


def _terminate(_signum: int, _frame: Any) -> None:
    raise SystemExit(143)  # unwinds through every `finally`: the servers are stopped


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    from inferno.hardware import detect

    cpu = detect().cpu
    command = shlex.join(["python", *sys.argv])
    load_before = os.getloadavg()[0]
    say(f"CPU: {cpu.model} ({cpu.usable_cores} usable cores); 1-min load average "
        f"{load_before:.2f}; {command}")
    if load_before > 0.5:
        say("  WARNING: other processes are busy on this machine: figures will be noisy")
    daemons_before = ray_daemons()
    if daemons_before:
        say(f"  note: Ray daemons already running (not this script's, left alone): "
            f"{', '.join(f'{pid} {n}' for pid, n in daemons_before.items())}")
    plan = sv.ensure_plan(args.repository)
    sv.short_sentences(plan)  # writes sv.TEXT
    say(f"plan: {plan}; input: one sentence of <= {sv.SHORT_TOKENS} tokens per request "
        f"({len(sv.TEXT.read_text().splitlines())} sentences from the bundled set)")
    own_cores = os.sched_getaffinity(0)
    modes: dict[str, Mode] = {}
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        log_dir = args.logs or Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="inferno-ray-scaling-")))
        log_dir.mkdir(parents=True, exist_ok=True)
        try:
            for pinned in {"pinned": [True], "unpinned": [False], "both": [True, False]}[args.modes]:
                os.sched_setaffinity(0, {sv.LOAD_CORE} if pinned else own_cores)
                try:
                    mode = run_mode(args, pinned, log_dir)
                finally:
                    os.sched_setaffinity(0, own_cores)
                modes[mode.name] = mode
        finally:
            daemons = ray_daemons()
            ours = [f"{pid} {n}" for pid, n in daemons.items()
                    if pid in OURS and OURS[pid].is_running()]  # is_running: not a reused pid
            others = [f"{pid} {n}" for pid, n in daemons.items()
                      if f"{pid} {n}" not in ours and pid not in daemons_before]
            say("\nRay daemons (raylet, gcs_server) of this run's servers still running: "
                + (", ".join(ours) if ours else "none"))
            if others:
                say(f"  note: Ray daemons started meanwhile by someone else, left alone: "
                    f"{', '.join(others)} (the figures shared the machine with them)")
    rows_of = {name: summarize(m, args.concurrency) for name, m in modes.items()}
    ratios_of = {name: ratios(m, args.concurrency) for name, m in modes.items()}
    for name, m in modes.items():
        print_mode(m, rows_of[name], ratios_of[name], args)
    results = checks(rows_of, ratios_of)
    say("\nacceptance (issue 18, pinned figures):")
    for c in results:
        verdict = {True: "PASS", False: "FAIL", None: "n/a "}[c["passed"]]
        say(f"  [{verdict}] {c['check']}: {c['detail']}")
    elapsed = time.perf_counter() - started
    say(f"\nbenchmark took {elapsed:.0f} s; 1-min load average {os.getloadavg()[0]:.2f} at the end"
        + (f"; server logs in {args.logs}" if args.logs else ""))
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    path = args.json or sv.RESULTS / f"ray_scaling-{stamp}.json"
    record = {
        "benchmark": "ray_scaling",
        "command": command,
        "cpu": cpu.model,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "plan": str(plan),
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "logs")}
        | {"repository": str(args.repository)},
        "modes": {
            name: {
                "peer_batch": m.peer_batch,
                "raw": asdict(m.ceiling) if m.ceiling else None,
                "commands": m.commands,
                "skipped": m.skipped,
                "log_notes": m.notes,
                "rows": rows_of[name],
                "ratios": ratios_of[name],
                "rounds": [
                    {k: [asdict(s) for s in v.values()] for k, v in r.items()} for r in m.rounds
                ],
            }
            for name, m in modes.items()
        },
        "checks": results,
        "benchmark_s": elapsed,
        "load_average_1min_before": load_before,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    say(f"results: {path}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        say("\ninterrupted: every server started here was stopped")
        sys.exit(130)
