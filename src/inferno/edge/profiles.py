"""Constrained device profiles: run a model as it would run on a small device, and say if it fits.

A ``Profile`` is a thread count, a memory cap and a CPU quota. ``run_profile`` runs the model
in a child process (``_profile_child.py``, which imports only numpy and onnxruntime) under
those limits — a cgroup v2 ``memory.max``/``cpu.max`` where one is delegated to us, otherwise
``RLIMIT_AS`` and CPU affinity (see ``_limits``) — and reports latency, throughput, peak RSS
and load time, or that the model does not fit, with the reason. The limits never touch the
calling process, and a model that does not fit cannot crash it.

When the capped run fails, the model is loaded once more under a larger cap (``PROBE_FACTOR``
times the profile's, at least ``PROBE_MIN_MB``) to tell "does not fit" from "does not run" and
to say how much it needs; a model that fails there too for a reason other than memory is the
user's input error (``ModelLoadError``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inferno.edge import _limits
from inferno.edge._profile_child import MEMORY_ERROR_MARKERS
from inferno.edge._profile_inputs import Target, prepare
from inferno.errors import ConfigError, ModelLoadError, RuntimeUnavailableError

CHILD = Path(__file__).with_name("_profile_child.py")
EXIT_DOES_NOT_FIT = 3
"""``inferno bench --profile`` exit code when the model was measured and does not fit a profile."""
MIN_RUNS = 5
"""Measured runs at the least, however short the duration."""
PROBE_FACTOR = 4
PROBE_MIN_MB = 2048
CHILD_TIMEOUT_S = 300.0
"""Seconds a child may take beyond its warm-up and measured time (imports and loading)."""

Progress = Callable[[str, float], None]
"""``progress(description, fraction done)``."""


class Profile(BaseModel):
    """A device to pretend to be: how many threads, how much memory, how much CPU."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    threads: int = Field(1, ge=1, le=256)
    """ONNX Runtime intra-op threads (inter-op is 1); OMP/MKL threads too."""
    memory_mb: int | None = Field(None, ge=16)
    """The memory cap in MB (cgroup ``memory.max``, else ``RLIMIT_AS``); None: no cap."""
    cpu_quota: float | None = Field(None, gt=0, le=256)
    """CPU time in cores (cgroup ``cpu.max``, else pinned to whole cores); None: ``threads`` cores."""
    description: str = ""

    @property
    def cores(self) -> float:
        """The CPU the run may use, in cores."""
        return self.cpu_quota if self.cpu_quota is not None else float(self.threads)

    def with_overrides(self, *, threads: int | None = None, memory_mb: int | None = None,
                       cpu_quota: float | None = None) -> Profile:
        """This profile with the given fields replaced; its name says what changed.

        Raises:
            ConfigError: an override out of range, naming the flag and the value.
        """
        changes = {k: v for k, v in (("threads", threads), ("memory_mb", memory_mb),
                                     ("cpu_quota", cpu_quota)) if v is not None}
        if not changes:
            return self
        label = ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in changes.items())
        return make_profile(name=f"{self.name}({label})", threads=changes.get("threads", self.threads),
                            memory_mb=changes.get("memory_mb", self.memory_mb),
                            cpu_quota=changes.get("cpu_quota", self.cpu_quota),
                            description=self.description)

    def describe(self) -> str:
        memory = f"{self.memory_mb} MB" if self.memory_mb is not None else "no memory cap"
        return f"{self.threads} thread(s), {memory}, {self.cores:g} core(s)"


def make_profile(**fields: Any) -> Profile:
    """A Profile; a bad field is a ConfigError naming the flag, what it accepts and the value."""
    try:
        return Profile(**fields)
    except ValidationError as exc:
        problem = exc.errors()[0]
        flag = "--" + str(problem["loc"][0]).replace("_", "-") if problem["loc"] else "profile"
        raise ConfigError(f"{flag}: {problem['msg'].lower()}, got {problem.get('input')!r}") from exc


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(name="edge-tiny", threads=1, memory_mb=256,
                description="1 core, 256 MB: the smallest Linux boards"),
        Profile(name="edge-small", threads=1, memory_mb=512,
                description="1 core, 512 MB: a small single-board computer"),
        Profile(name="edge-medium", threads=2, memory_mb=2048,
                description="2 cores, 2 GB: a mid-range single-board computer or gateway"),
    )
}
CUSTOM = "custom"
"""The profile name used when only ``--threads``/``--memory-mb``/``--cpu-quota`` are given."""


def get_profile(name: str) -> Profile:
    """The registered profile called ``name``.

    Raises:
        ConfigError: unknown name; the message lists the known ones.
    """
    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigError(f"--profile {name!r}: unknown profile; expected one of "
                          f"{', '.join(PROFILES)}") from None


def resolve_profiles(names: Sequence[str], *, threads: int | None = None, memory_mb: int | None = None,
                     cpu_quota: float | None = None) -> list[Profile]:
    """Profiles from ``--profile`` values (each may be comma-separated), with the overrides applied.

    No names and some override: one ``custom`` profile (1 thread and no memory cap unless given).

    Raises:
        ConfigError: an unknown name, a bad override, or nothing at all asked for.
    """
    wanted = [n.strip() for value in names for n in value.split(",") if n.strip()]
    if not wanted:
        if threads is None and memory_mb is None and cpu_quota is None:
            raise ConfigError(f"--profile: expected a profile name ({', '.join(PROFILES)}) "
                              "or --threads/--memory-mb/--cpu-quota, got none")
        return [make_profile(name=CUSTOM, threads=threads or 1, memory_mb=memory_mb, cpu_quota=cpu_quota,
                             description="set by --threads/--memory-mb/--cpu-quota")]
    unique = list(dict.fromkeys(wanted))
    return [get_profile(n).with_overrides(threads=threads, memory_mb=memory_mb, cpu_quota=cpu_quota)
            for n in unique]


@dataclass(frozen=True)
class Limits:
    """The limits actually applied to a run, and by what."""

    threads: int
    memory_mb: int | None
    memory_mechanism: Literal["cgroup", "rlimit", "none"]
    """``cgroup`` caps RAM (``memory.max``); ``rlimit`` caps address space (``RLIMIT_AS``)."""
    cpu_quota: float | None
    cpu_mechanism: Literal["cgroup", "affinity", "none"]
    cpus: tuple[int, ...] | None = None
    """The CPUs the run was pinned to (``affinity``)."""

    def describe(self) -> str:
        memory = "no cap" if self.memory_mechanism == "none" else f"{self.memory_mb} MB {self.memory_mechanism}"
        if self.cpu_mechanism == "affinity":
            cpu = f"pinned to CPU {','.join(map(str, self.cpus or ()))}"
        else:
            cpu = f"cpu.max {self.cpu_quota or 0:g} cores" if self.cpu_mechanism == "cgroup" else "no CPU limit"
        return f"{memory}; {cpu}"


@dataclass(frozen=True)
class ProfileResult:
    """One model under one profile: measured, or why it does not fit."""

    profile: Profile
    model: str
    batch: int
    fits: bool
    reason: str | None
    """Why it does not fit (one line), None when it fits."""
    limits: Limits
    latency_ms: dict[str, float] | None = None
    """``p50``/``p90``/``p99`` of back-to-back runs, None when it does not fit."""
    throughput: float | None = None
    """Rows per second (runs × batch / time spent running)."""
    runs: int = 0
    load_ms: float | None = None
    """Time to create the ONNX Runtime session."""
    peak_rss_mb: float | None = None
    """Peak resident set of the child (``VmHWM``): Python + numpy + onnxruntime + the model."""
    baseline_rss_mb: float | None = None
    """Resident set after importing numpy and onnxruntime, before the model."""
    loaded_rss_mb: float | None = None
    """Resident set once the session is created."""
    peak_vm_mb: float | None = None
    """Peak address space (what ``RLIMIT_AS`` caps)."""
    inputs: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the profile and limits as nested objects)."""
        data = asdict(self)
        data["profile"] = self.profile.model_dump()
        data["notes"] = list(self.notes)
        return data


def run_profile(model: str | Target, profile: Profile, *, batch: int = 1, duration_s: float = 3.0,
                warmup_s: float = 1.0, data: Path | None = None,
                progress: Progress | None = None) -> ProfileResult:
    """Run MODEL under ``profile`` in a child process and measure it.

    Args:
        model: an edge bundle folder, an ``.onnx`` file, a student folder or a bundled name
            (anything ``load_model`` accepts), or a Target from ``prepare_target``.
        profile: the device to pretend to be.
        batch: rows per run (samples are repeated or cut to it); ignored for a Target.
        duration_s: measured seconds (at least ``MIN_RUNS`` runs).
        warmup_s: unrecorded seconds before measuring (at least one run).
        data: an ``.npz`` of input rows instead of the model's own samples; ignored for a Target.
        progress: called with a description and the fraction done.

    Returns:
        A ProfileResult; ``fits`` False with a one-line ``reason`` when the model does not fit.

    Raises:
        ConfigError: a bad duration, warm-up or batch.
        ModelLoadError: the model cannot be loaded, or does not run even without the limits.
        RuntimeUnavailableError: the child could not be started or ran past its time limit.
    """
    if duration_s <= 0 or warmup_s < 0:
        raise ConfigError(f"--duration {duration_s:g} / --warmup {warmup_s:g}: expected a duration > 0 "
                          "and a warm-up >= 0 seconds")
    if isinstance(model, Target):
        return _run(model, profile, duration_s, warmup_s, progress)
    with prepare_target(model, batch=batch, data=data) as target:
        return _run(target, profile, duration_s, warmup_s, progress)



@contextmanager
def prepare_target(model: str, *, batch: int = 1, data: Path | None = None) -> Iterator[Target]:
    """Load MODEL once and write its feeds, for several ``run_profile`` calls (see ``_profile_inputs``)."""
    with prepare(model, batch, data) as target:
        yield target


def _run(target: Target, profile: Profile, duration_s: float, warmup_s: float,
         progress: Progress | None) -> ProfileResult:
    report = progress or (lambda _what, _fraction: None)
    config = {"model": str(target.model_path), "feeds": str(target.feeds_path), "threads": profile.threads,
              "duration_s": duration_s, "warmup_s": warmup_s, "min_runs": MIN_RUNS}
    run = _child_run(config, profile, timeout_s=CHILD_TIMEOUT_S + duration_s + warmup_s,
                     on_stage=lambda stage, fraction: report(f"{profile.name}: {stage}", fraction))
    if run.result is not None:
        return _measured(target, profile, run)
    report(f"{profile.name}: does not fit; measuring what it needs", 1.0)
    return _does_not_fit(target, profile, run)


@dataclass
class _ChildRun:
    """What one child run said: its events, how it ended, its limits."""

    limits: Limits
    events: list[dict[str, Any]]
    returncode: int
    stderr: str
    cgroup_peak_mb: float | None = None
    oom_kills: int = 0
    notes: list[str] = field(default_factory=list)

    def last(self, event: str) -> dict[str, Any] | None:
        found = [e for e in self.events if e.get("event") == event]
        return found[-1] if found else None

    @property
    def result(self) -> dict[str, Any] | None:
        return self.last("result")

    @property
    def stage(self) -> str:
        stage = self.last("stage")
        return str(stage["stage"]) if stage else "starting"


def _child_run(config: dict[str, Any], profile: Profile, *, timeout_s: float,
               on_stage: Callable[[str, float], None]) -> _ChildRun:
    """Start the child under ``profile``'s limits, feed it ``config``, collect what it says."""
    cpus, cpu_note = _limits.pinned_cpus(profile.cores)
    notes = []
    delegated = _limits.delegated_cgroup() if profile.memory_mb is not None else None
    group = None
    if delegated is not None:
        try:
            group = _limits.ChildCgroup.create(*delegated, profile.memory_mb, profile.cpu_quota)
        except OSError as exc:
            notes.append(f"could not create a cgroup under {delegated[0]} ({exc.strerror}): used RLIMIT_AS")
    if cpu_note and not (group and group.cpu):
        notes.append(cpu_note)
    config = {**config, "memory_mb": profile.memory_mb, "cpus": cpus,
              "cgroup": str(group.path) if group else None, "cgroup_cpu": bool(group and group.cpu)}
    try:
        events, returncode, stderr = _spawn(config, profile.threads, timeout_s, on_stage)
    finally:
        if group is not None:
            group.close()
    run = _ChildRun(_applied(profile, events, cpus), events, returncode, stderr,
                    cgroup_peak_mb=group.peak_mb if group else None,
                    oom_kills=group.oom_kills if group else 0, notes=notes)
    limits_event = run.last("limits") or {}
    run.notes.extend(str(n) for n in limits_event.get("notes", []))
    return run


def _applied(profile: Profile, events: list[dict[str, Any]], cpus: list[int] | None) -> Limits:
    said = next((e for e in events if e.get("event") == "limits"), {})
    memory = said.get("memory", "none")
    cpu = said.get("cpu", "none")
    return Limits(threads=profile.threads, memory_mb=profile.memory_mb if memory != "none" else None,
                  memory_mechanism=memory, cpu_quota=profile.cpu_quota if cpu == "cgroup" else None,
                  cpu_mechanism=cpu, cpus=tuple(cpus) if cpu == "affinity" and cpus else None)


def child_environment(threads: int) -> dict[str, str]:
    """The child's environment: few malloc arenas (each reserves address space), the thread counts."""
    env = dict(os.environ)
    env.update({"MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                # numpy computes nothing in the child: one BLAS thread, not one stack per core
                "OPENBLAS_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    return env


def _spawn(config: dict[str, Any], threads: int, timeout_s: float,
           on_stage: Callable[[str, float], None]) -> tuple[list[dict[str, Any]], int, str]:
    """Run the child to its end: its JSON events, exit code (negative: killed) and stderr's tail."""
    # -P: do not put this folder first on sys.path; run as a file, the child imports no inferno.
    command = [sys.executable, "-P", str(CHILD)]
    events: list[dict[str, Any]] = []
    timed_out = threading.Event()
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace") as stderr:
        try:
            child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                                     env=child_environment(threads), text=True)
        except OSError as exc:
            raise RuntimeUnavailableError(f"could not start {sys.executable} for the profile run: {exc}") from exc

        def expire() -> None:
            timed_out.set()
            child.kill()

        timer = threading.Timer(timeout_s, expire)
        timer.start()
        try:
            _talk(child, config, events, on_stage)
            returncode = child.wait()
        finally:
            timer.cancel()
            if child.poll() is None:
                child.kill()
                child.wait()
        stderr.seek(0)
        tail = stderr.read()[-2000:]
    if timed_out.is_set():
        stage = next((e["stage"] for e in reversed(events) if e.get("event") == "stage"), "starting")
        raise RuntimeUnavailableError(f"the profile run of {config['model']} did not finish within "
                                      f"{timeout_s:.0f} s (it was {stage})")
    return events, returncode, tail


def _talk(child: subprocess.Popen[str], config: dict[str, Any], events: list[dict[str, Any]],
          on_stage: Callable[[str, float], None]) -> None:
    """Send the config, then read the child's JSON lines as they come."""
    if child.stdin is None or child.stdout is None:
        raise RuntimeUnavailableError("the profile child has no pipes")
    try:
        child.stdin.write(json.dumps(config))
        child.stdin.close()
    except BrokenPipeError:  # it died at once: its exit code says how
        return
    stage = "starting"
    for line in child.stdout:
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a library printed to stdout; only our JSON lines count
        if not isinstance(event, dict):
            continue
        events.append(event)
        if event.get("event") == "stage":
            stage = str(event.get("stage"))
            on_stage(stage, 0.0)
        elif event.get("event") == "progress":
            on_stage(stage, float(event.get("fraction", 0.0)))


UNEXPECTED_MODULES = ("inferno", "torch", "onnx", "pydantic", "transformers")
"""Packages the child must not import: its peak RSS would be theirs, not the model's."""


def _measured(target: Target, profile: Profile, run: _ChildRun) -> ProfileResult:
    result = run.result or {}
    notes = list(run.notes)
    if run.limits.memory_mechanism == "rlimit":
        notes.append("RLIMIT_AS caps address space, not RAM: shared libraries and thread stacks count "
                     "in full, so it is stricter than a device with that much RAM")
    loaded = sorted(set(result.get("modules", ())) & set(UNEXPECTED_MODULES))
    if loaded:
        notes.append(f"the measured process imported {', '.join(loaded)}: its RSS is not the model's alone")
    if run.cgroup_peak_mb is not None:
        notes.append(f"cgroup memory.peak {run.cgroup_peak_mb:.1f} MB (RAM and page cache charged to the run)")
    return ProfileResult(
        profile=profile, model=target.name, batch=target.batch, fits=True, reason=None, limits=run.limits,
        latency_ms=result.get("latency_ms"), throughput=result.get("throughput"), runs=int(result.get("runs", 0)),
        load_ms=result.get("load_ms"), peak_rss_mb=result.get("peak_rss_mb"),
        baseline_rss_mb=result.get("baseline_rss_mb"), loaded_rss_mb=result.get("loaded_rss_mb"),
        peak_vm_mb=result.get("peak_vm_mb"), inputs=target.inputs, notes=tuple(notes))


def _does_not_fit(target: Target, profile: Profile, run: _ChildRun) -> ProfileResult:
    """The capped run failed: load once more under a larger cap to say why, and how much it needs."""
    failed = _failure_text(run)
    if profile.memory_mb is None:
        raise ModelLoadError(f"model {target.name}: failed while {run.stage} with no memory cap: {failed}")
    probe_mb = max(PROBE_FACTOR * profile.memory_mb, PROBE_MIN_MB)
    probe_profile = profile.model_copy(update={"memory_mb": probe_mb})
    config = {"model": str(target.model_path), "feeds": str(target.feeds_path), "threads": profile.threads,
              "probe": True}
    probe = _child_run(config, probe_profile, timeout_s=CHILD_TIMEOUT_S, on_stage=lambda _s, _f: None)
    space = "RAM" if run.limits.memory_mechanism == "cgroup" else "address space"
    cause = f"out of memory while {run.stage}" if _is_memory(run) else f"failed while {run.stage}: {failed}"
    if probe.result is not None:
        needs = _needs_mb(probe)
        peak = f"; with {probe_mb} MB it peaks at {needs:.0f} MB" if needs is not None else ""
        reason = f"does not fit {profile.name}: needs more than {profile.memory_mb} MB of {space} ({cause}{peak})"
    elif _is_memory(probe):
        reason = f"does not fit {profile.name}: needs more than {probe_mb} MB of {space} ({cause})"
    else:
        raise ModelLoadError(f"model {target.name} fails under {profile.memory_mb} MB and under {probe_mb} MB "
                             f"alike, so not for want of memory: failed while {probe.stage}: "
                             f"{_failure_text(probe)}")
    return ProfileResult(profile=profile, model=target.name, batch=target.batch, fits=False, reason=reason,
                         limits=run.limits, inputs=target.inputs, notes=tuple(run.notes))


def _needs_mb(probe: _ChildRun) -> float | None:
    """What the uncapped-enough run used: the cgroup's peak, else peak address space (RLIMIT_AS's unit)."""
    if probe.cgroup_peak_mb is not None:
        return probe.cgroup_peak_mb
    result = probe.result or {}
    value = result.get("peak_vm_mb") or result.get("peak_rss_mb")
    return float(value) if value is not None else None


def _is_memory(run: _ChildRun) -> bool:
    """Whether the run failed for want of memory: its error, its stderr, or the cgroup's OOM killer."""
    failure = run.last("failure")
    if failure is not None:
        return bool(failure.get("memory"))
    said = run.stderr.lower()
    return run.oom_kills > 0 or any(marker in said for marker in MEMORY_ERROR_MARKERS)


def _failure_text(run: _ChildRun) -> str:
    """One short line: the child's error, or the signal that killed it."""
    failure = run.last("failure")
    if failure is not None:
        return str(failure.get("error", "")).splitlines()[0][:160] if failure.get("error") else "failed"
    if run.returncode < 0:
        try:
            killed = f"killed by {signal.Signals(-run.returncode).name}"
        except ValueError:
            killed = f"killed by signal {-run.returncode}"
        return f"{killed} (out of memory)" if run.oom_kills else killed
    last = run.stderr.strip().splitlines()[-1:] or ["no output"]
    return f"exited with code {run.returncode}: {last[0][:160]}"
