"""How a profile's limits are applied to the child process that runs the model.

Memory: a cgroup v2 folder of our own with ``memory.max`` (RAM, what a device has) where the
memory controller is delegated to us; otherwise ``RLIMIT_AS`` (address space, set by the child
itself before it imports anything heavy). CPU: ``cpu.max`` in that cgroup where the cpu
controller is delegated too; otherwise the child pins itself to whole cores with
``sched_setaffinity``. Nothing here touches the calling process.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
CPU_PERIOD_US = 100_000
_counter = itertools.count()


def delegated_cgroup(root: Path = CGROUP_ROOT,
                     self_cgroup: Path = Path("/proc/self/cgroup")) -> tuple[Path, frozenset[str]] | None:
    """Our cgroup v2 folder and the controllers it hands to children, when we may create one.

    Only when the unified hierarchy is mounted at ``root``, the ``memory`` controller is
    already enabled for our children (``cgroup.subtree_control``) and the folder is writable:
    nothing is enabled or moved here, so a machine whose cgroups are not ours is left alone.
    """
    try:
        lines = self_cgroup.read_text(encoding="ascii").splitlines()
    except OSError:
        return None
    unified = [line[3:] for line in lines if line.startswith("0::")]
    if not unified:
        return None
    base = root / unified[0].strip().lstrip("/")
    try:
        if not (base / "cgroup.controllers").is_file():
            return None
        controllers = frozenset((base / "cgroup.subtree_control").read_text(encoding="ascii").split())
    except OSError:
        return None
    if "memory" not in controllers or not os.access(base, os.W_OK):
        return None
    return base, controllers


@dataclass
class ChildCgroup:
    """A cgroup made for one child run; ``close`` reads its peak and removes it."""

    path: Path
    cpu: bool
    """Whether ``cpu.max`` carries the CPU quota (else the child pins cores)."""
    peak_mb: float | None = None
    oom_kills: int = 0

    @classmethod
    def create(cls, base: Path, controllers: frozenset[str], memory_mb: int | None,
               cpu_quota: float | None) -> ChildCgroup:
        """A fresh child folder under ``base`` with ``memory.max`` (no swap) and maybe ``cpu.max``."""
        path = base / f"inferno-profile-{os.getpid()}-{next(_counter)}"
        path.mkdir()
        group = cls(path, cpu=cpu_quota is not None and "cpu" in controllers)
        try:
            if memory_mb is not None:
                (path / "memory.max").write_text(str(memory_mb * 1024 * 1024), encoding="ascii")
                if (path / "memory.swap.max").exists():
                    (path / "memory.swap.max").write_text("0", encoding="ascii")
            if group.cpu and cpu_quota is not None:
                quota = max(1000, round(cpu_quota * CPU_PERIOD_US))
                (path / "cpu.max").write_text(f"{quota} {CPU_PERIOD_US}", encoding="ascii")
        except OSError:
            group.close()
            raise
        return group

    def close(self) -> None:
        """Read ``memory.peak`` and the OOM kills, then remove the folder (once it is empty)."""
        self.read_stats()
        self.remove()

    def read_stats(self) -> None:
        """``peak_mb`` from ``memory.peak`` (kernel 5.19+), ``oom_kills`` from ``memory.events``."""
        try:
            self.peak_mb = int((self.path / "memory.peak").read_text(encoding="ascii")) / 2**20
        except (OSError, ValueError):
            self.peak_mb = None
        try:
            for line in (self.path / "memory.events").read_text(encoding="ascii").splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    self.oom_kills = int(value)
        except (OSError, ValueError):
            pass

    def remove(self) -> None:
        """Remove the folder, retrying while the kernel still counts the exited child in it."""
        for _ in range(50):  # the kernel empties the folder a moment after the child exits
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.02)
        log.warning("could not remove cgroup %s", self.path)


def pinned_cpus(cores: float) -> tuple[list[int] | None, str | None]:
    """The CPUs to pin a child to for ``cores`` whole cores, and a note when that is not exact.

    None when the process may already use no more than that many.
    """
    allowed = sorted(os.sched_getaffinity(0))
    wanted = max(1, math.ceil(cores))
    note = None
    if wanted != cores:
        note = f"a CPU quota of {cores:g} cores needs the cgroup cpu controller; pinned to {wanted} whole core(s)"
    if wanted >= len(allowed):
        if wanted > len(allowed):
            note = f"the profile asks for {cores:g} cores; this process may use only {len(allowed)}"
        return None, note
    return allowed[:wanted], note
