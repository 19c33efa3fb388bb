"""The measured run of ``inferno bench --profile``, in a process of its own.

Started by ``inferno.edge.profiles`` as ``python -P <this file>``, with its config as one
JSON object on stdin; it answers with JSON lines on stdout: ``{"event": "stage", ...}`` as it
goes (so the parent knows where a killed child died) and one ``{"event": "result", ...}`` at
the end. The limits are applied first, before numpy and onnxruntime are imported, so that
everything the model costs happens under them.

This file imports only the standard library, numpy and onnxruntime: not inferno (run as a
script, it does not even import the ``inferno`` package), so the peak RSS it reports is the
model's and the runtime's, not inferno's. Keep it that way.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

MEMORY_ERROR_MARKERS = ("bad_alloc", "memoryerror", "failed to map segment", "cannot allocate memory",
                        "out of memory", "unable to allocate", "memory allocation", "std::length_error",
                        "errno 12")
"""Lower-case fragments of the messages a failed allocation produces (Python, glibc, ORT)."""


def emit(event: str, **fields: Any) -> None:
    """One JSON line on stdout, flushed at once: the parent reads it even if we die next."""
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def status_mb() -> dict[str, float]:
    """Current and peak resident set and address space in MB, from /proc/self/status."""
    wanted = {"VmRSS": "rss_mb", "VmHWM": "peak_rss_mb", "VmSize": "vm_mb", "VmPeak": "peak_vm_mb"}
    found: dict[str, float] = {}
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in wanted:
                    found[wanted[key]] = int(value.split()[0]) / 1024
    except OSError:  # not Linux: ru_maxrss below still gives the peak
        pass
    return found


def apply_limits(config: dict[str, Any]) -> dict[str, Any]:
    """Join the cgroup (or set RLIMIT_AS) and pin the CPUs; returns what was actually applied."""
    applied: dict[str, Any] = {"memory": "none", "cpu": "none", "notes": []}
    memory_mb, cgroup = config.get("memory_mb"), config.get("cgroup")
    if cgroup:
        try:
            Path(cgroup, "cgroup.procs").write_text(str(os.getpid()), encoding="ascii")
            applied["memory"] = "cgroup"
            applied["cpu"] = "cgroup" if config.get("cgroup_cpu") else "none"
        except OSError as exc:
            applied["notes"].append(f"could not join cgroup {cgroup} ({exc.strerror}): fell back")
    if memory_mb and applied["memory"] == "none":
        cap = int(memory_mb) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        applied["memory"] = "rlimit"
    cpus = config.get("cpus")
    if cpus and applied["cpu"] == "none":
        os.sched_setaffinity(0, cpus)
        applied["cpu"] = "affinity"
    return applied


def open_session(config: dict[str, Any]) -> Any:
    """An ONNX Runtime CPU session with the profile's threads (intra-op), one inter-op thread."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(config["threads"])
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors come back to the parent as exceptions, not log lines
    # No busy-waiting between ops: an edge device pays for spinning in battery and heat.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if str(config["model"]).endswith(".ort"):
        options.add_session_config_entry("session.load_model_format", "ORT")
    return ort.InferenceSession(str(config["model"]), options, providers=["CPUExecutionProvider"])


def measure(session: Any, feeds: dict[str, Any], warmup_s: float, duration_s: float,
            min_runs: int) -> list[float]:
    """Latencies (ms) of back-to-back runs: ``warmup_s`` unrecorded, then ``duration_s`` recorded."""
    session.run(None, feeds)  # at least one unrecorded run, whatever warmup_s says
    end = time.perf_counter() + warmup_s
    while time.perf_counter() < end:
        session.run(None, feeds)
    emit("stage", stage="measuring")
    latencies: list[float] = []
    start = time.perf_counter()
    next_report = start + 0.5
    while time.perf_counter() - start < duration_s or len(latencies) < min_runs:
        begin = time.perf_counter()
        session.run(None, feeds)
        now = time.perf_counter()
        latencies.append((now - begin) * 1000)
        if now >= next_report:
            emit("progress", fraction=min(1.0, (now - start) / duration_s))
            next_report = now + 0.5
    return latencies


def run(config: dict[str, Any]) -> dict[str, Any]:
    """Import, load, warm up and measure; every stage announced before it starts."""
    emit("stage", stage="importing onnxruntime")
    import numpy as np
    import onnxruntime  # noqa: F401  (imported here so that a failure names this stage)

    baseline = status_mb()
    emit("stage", stage="loading the inputs")
    with np.load(config["feeds"]) as archive:
        feeds = {name: archive[name] for name in archive.files}
    emit("stage", stage="creating the session")
    begin = time.perf_counter()
    session = open_session(config)
    load_ms = (time.perf_counter() - begin) * 1000
    loaded = status_mb()
    emit("stage", stage="running")
    if config.get("probe"):
        session.run(None, feeds)
        latencies: list[float] = []
    else:
        latencies = measure(session, feeds, float(config["warmup_s"]), float(config["duration_s"]),
                            int(config["min_runs"]))
    total_s = sum(latencies) / 1000
    batch = int(next(iter(feeds.values())).shape[0]) if feeds else 1
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, so it would report the parent's
    # RSS at fork time whenever that was larger than ours.
    end = status_mb()
    peak_rss_mb = end.get("peak_rss_mb") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"load_ms": load_ms, "runs": len(latencies),
            "latency_ms": ({f"p{q}": float(np.percentile(latencies, q)) for q in (50, 90, 99)}
                           if latencies else None),
            "throughput": batch * len(latencies) / total_s if total_s > 0 else None,
            "baseline_rss_mb": baseline.get("rss_mb"), "loaded_rss_mb": loaded.get("rss_mb"),
            "peak_rss_mb": peak_rss_mb, "peak_vm_mb": end.get("peak_vm_mb"),
            "modules": sorted({name.partition(".")[0] for name in sys.modules})}


def main() -> int:
    """Read the config, apply the limits, run; a failure is a result line too (exit code 1)."""
    config = json.loads(sys.stdin.read())
    applied = apply_limits(config)
    emit("limits", **applied)
    try:
        result = run(config)
    except BaseException as exc:  # the parent judges; the child only reports, whatever it was
        message = f"{type(exc).__name__}: {exc}".strip()
        memory = isinstance(exc, MemoryError) or any(m in message.lower() for m in MEMORY_ERROR_MARKERS)
        emit("failure", error=message[:2000], memory=memory, **status_mb())
        return 1
    emit("result", **result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
