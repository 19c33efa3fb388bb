"""GPU telemetry through NVML and energy meters for "joules per inference".

GPU figures come from NVML (the ``pynvml`` module of ``nvidia-ml-py``); CPU energy from
Linux RAPL counters under ``/sys/class/powercap``. Nothing here raises because a machine
lacks a counter: a reading leaves that field ``None`` and a meter says why in
``unavailable``.

Resolution: on many boards ``nvmlDeviceGetPowerUsage`` is averaged over about one second
and the energy counter updates at coarse intervals, so a region shorter than a second or
two mostly measures the edges. Callers bracket at least ``MIN_ENERGY_WINDOW_S`` of work
(repeat the inference) and divide by the count.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import numpy as np

from inferno.errors import ConfigError
from inferno.hardware.nvml import nvml as _nvml

MIN_ENERGY_WINDOW_S = 2.0
"""Shortest region an energy figure means something for (NVML power is a ~1 s average)."""

POWERCAP_ROOT = Path("/sys/class/powercap")
_SAMPLE_INTERVAL_S = 0.01
# Top-level RAPL zones only: subzones (intel-rapl:0:0, core/uncore/dram) are inside their
# package, and intel-rapl-mmio:N repeats a package's counter through another interface.
# AMD Zen CPUs appear under the same names: the kernel's intel_rapl_msr driver serves them.
_RAPL_ZONE = re.compile(r"intel-rapl:\d+")


@dataclass(frozen=True)
class GpuReading:
    """One GPU at one moment; a field is None where NVML cannot answer that query."""

    index: int
    name: str | None
    uuid: str | None
    utilization: float | None
    """Fraction of the last sample period a kernel ran (0..1)."""
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    power_w: float | None
    power_limit_w: float | None
    """The enforced power limit."""
    energy_j: float | None
    """Energy used since the driver loaded (Volta and newer)."""


def _query(nvml: ModuleType, fn: Any, *args: Any) -> Any:
    """One NVML call, None where the card cannot answer it (others may still)."""
    try:
        return fn(*args)
    except nvml.NVMLError:
        return None


def _scaled(value: Any, scale: float) -> float | None:
    return None if value is None else value / scale


def gpu_readings() -> list[GpuReading]:
    """Every GPU NVML sees; [] without NVML (never raises)."""
    nvml, _ = _nvml()
    if nvml is None:
        return []
    readings = []
    for index in range(_query(nvml, nvml.nvmlDeviceGetCount) or 0):
        handle = _query(nvml, nvml.nvmlDeviceGetHandleByIndex, index)
        if handle is not None:
            readings.append(_reading(nvml, index, handle))
    return readings


def _reading(nvml: ModuleType, index: int, handle: Any) -> GpuReading:
    name = _query(nvml, nvml.nvmlDeviceGetName, handle)
    uuid = _query(nvml, nvml.nvmlDeviceGetUUID, handle)
    util = _query(nvml, nvml.nvmlDeviceGetUtilizationRates, handle)
    memory = _query(nvml, nvml.nvmlDeviceGetMemoryInfo, handle)
    return GpuReading(
        index=index,
        name=None if name is None else str(name),
        uuid=None if uuid is None else str(uuid),
        utilization=None if util is None else util.gpu / 100,
        memory_used_bytes=None if memory is None else int(memory.used),
        memory_total_bytes=None if memory is None else int(memory.total),
        power_w=_scaled(_query(nvml, nvml.nvmlDeviceGetPowerUsage, handle), 1e3),  # mW
        power_limit_w=_scaled(_query(nvml, nvml.nvmlDeviceGetEnforcedPowerLimit, handle), 1e3),
        energy_j=_scaled(_query(nvml, nvml.nvmlDeviceGetTotalEnergyConsumption, handle), 1e3),  # mJ
    )


def _parse_device(device: str) -> int | None:
    """The CUDA index of ``cuda``/``cuda:N``, None for ``cpu``."""
    if device == "cpu":
        return None
    match = re.fullmatch(r"cuda(?::(\d+))?", device)
    if match is None:
        raise ConfigError(f"energy meter device {device!r}: expected 'cpu', 'cuda' or 'cuda:N'")
    return int(match.group(1) or 0)


def _rapl_zones(root: Path) -> tuple[list[Path], str]:
    """The package zone folders under ``root``, or [] and why there are none."""
    if not root.is_dir():
        return [], f"RAPL not readable: {root} does not exist"
    try:
        entries = sorted(root.iterdir())
    except OSError as exc:
        return [], f"RAPL not readable: {exc}"
    # psys (platform) zones also count the packages: summing both would count twice.
    zones = [d for d in entries
             if _RAPL_ZONE.fullmatch(d.name) and _text(d / "name").startswith("package")]
    return zones, "" if zones else f"RAPL not readable: {root} has no intel-rapl package zone"


def _text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


class EnergyMeter:
    """Joules a device used while the ``with`` block ran.

    ``EnergyMeter("cuda:0")`` reads NVML's energy counter, or integrates power sampled every
    10 ms where the card has no counter; ``EnergyMeter("cpu")`` sums the RAPL package
    counters. Afterwards ``joules`` and ``source`` hold the figure, or ``unavailable`` says
    why there is none. Bracket at least ``MIN_ENERGY_WINDOW_S`` of work.
    """

    def __init__(self, device: str = "cpu", *, powercap_root: Path | str = POWERCAP_ROOT,
                 sample_interval_s: float = _SAMPLE_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.device = device
        self._clock = clock
        self._gpu = _parse_device(device)
        self._root = Path(powercap_root)
        self._interval = sample_interval_s
        self.joules: float | None = None
        self.source: str | None = None
        self.unavailable: str | None = None
        self.seconds = 0.0
        """How long the region ran (compare with ``MIN_ENERGY_WINDOW_S``)."""
        self._t0 = 0.0
        self._nvml: Any = None
        self._handle: Any = None
        self._start: Any = None  # the starting counter(s); None on a GPU that is sampled
        self._samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def available(cls, device: str = "cpu", *, powercap_root: Path | str = POWERCAP_ROOT) -> bool:
        """Whether a meter for ``device`` would give a figure here (reads one counter)."""
        return cls(device, powercap_root=powercap_root)._begin()

    def joules_per(self, count: int) -> float | None:
        """Energy per inference when ``count`` inferences ran in the region."""
        return None if self.joules is None or count <= 0 else self.joules / count

    def __enter__(self) -> EnergyMeter:
        self.joules = self.source = self.unavailable = None
        self._samples, self._thread = [], None
        self._stop.clear()
        self._t0 = self._clock()
        if self._begin() and self._start is None:
            self._thread = threading.Thread(target=self._sampler, daemon=True,
                                            name=f"inferno-power-{self._gpu}")
            self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.seconds = self._clock() - self._t0
        if self.unavailable is None:
            self._end_rapl() if self._gpu is None else self._end_gpu()

    def _begin(self) -> bool:
        """Take the starting reading; False (with ``unavailable`` set) where none can be had."""
        if self._gpu is None:
            return self._begin_rapl()
        nvml, reason = _nvml()
        self._nvml = nvml
        if nvml is None:
            self.unavailable = f"no NVML: {reason}"
            return False
        try:
            self._handle = nvml.nvmlDeviceGetHandleByIndex(self._gpu)
        except nvml.NVMLError as exc:
            self.unavailable = f"no GPU {self._gpu}: {exc}"
            return False
        self._start = _query(nvml, nvml.nvmlDeviceGetTotalEnergyConsumption, self._handle)
        if self._start is None and not self._sample_power():  # no counter: sample power
            self.unavailable = f"GPU {self._gpu} reports neither an energy counter nor power"
            return False
        return True

    def _begin_rapl(self) -> bool:
        zones, reason = _rapl_zones(self._root)
        try:  # (zone, counter range, starting count); the range is for wrap-around
            self._start = [(zone, int((zone / "max_energy_range_uj").read_text()),
                            int((zone / "energy_uj").read_text())) for zone in zones]
        except PermissionError as exc:
            reason = f"RAPL not readable: {exc} (energy_uj is root-only since Linux 5.10)"
        except (OSError, ValueError) as exc:
            reason = f"RAPL not readable: {exc}"
        self.unavailable = reason or None
        return self.unavailable is None

    def _end_gpu(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._sample_power()
            self.joules, self.source = _trapezoid(self._samples), "nvml power samples"
            return
        end = _query(self._nvml, self._nvml.nvmlDeviceGetTotalEnergyConsumption, self._handle)
        if end is None:
            self.unavailable = f"GPU {self._gpu}'s energy counter stopped answering"
        else:
            self.joules, self.source = (end - self._start) / 1e3, "nvml energy counter"  # mJ

    def _end_rapl(self) -> None:
        total_uj = 0
        for zone, max_range_uj, start in self._start:
            try:
                end = int((zone / "energy_uj").read_text())
            except (OSError, ValueError) as exc:
                self.unavailable = f"RAPL not readable: {exc}"
                return
            # The counter wraps at max_energy_range_uj; one wrap per region is detectable.
            total_uj += end - start if end >= start else end + max_range_uj - start
        self.joules, self.source = total_uj / 1e6, "rapl"

    def _sampler(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample_power()

    def _sample_power(self) -> bool:
        milliwatts = _query(self._nvml, self._nvml.nvmlDeviceGetPowerUsage, self._handle)
        if milliwatts is None:
            return False
        self._samples.append((self._clock(), milliwatts / 1e3))
        return True


def _trapezoid(samples: list[tuple[float, float]]) -> float:
    """Joules under (monotonic seconds, watts) samples."""
    if len(samples) < 2:
        return 0.0
    t, w = np.asarray(samples, dtype=np.float64).T
    return float(np.sum(np.diff(t) * (w[1:] + w[:-1]) / 2))
