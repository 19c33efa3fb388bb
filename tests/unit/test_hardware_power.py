"""GPU readings and energy meters: NVML through a fake ``pynvml``, RAPL through a fake sysfs tree.

NVML is a C library that CPU machines lack, so the NVML paths run against a pure-Python
module with pynvml's names, units (mW, mJ, percent, bytes) and error classes. The last test
runs the real thing on a GPU machine.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import pytest

from inferno import hardware
from inferno.errors import ConfigError
from inferno.hardware import GpuInfo, detect, nvml, power
from inferno.hardware.power import EnergyMeter, GpuReading, gpu_readings


class NVMLError(Exception):
    def __str__(self) -> str:
        return type(self).__name__.removeprefix("NVMLError_")


class NVMLError_NotSupported(NVMLError):  # pynvml's class names
    pass


class NVMLError_InvalidArgument(NVMLError):
    pass


class NVMLError_LibraryNotFound(NVMLError):
    def __str__(self) -> str:
        return "NVML Shared Library Not Found"


@dataclass
class FakeGpu:
    name: str = "Fake A100"
    uuid: str = "GPU-0000"
    util_percent: int = 37
    memory_used: int = 3 * 2**30
    memory_total: int = 40 * 2**30
    power_mw: Callable[[], int] = lambda: 123_456
    limit_mw: int = 300_000
    energy_mj: Callable[[], int] = lambda: 5_000_000
    unsupported: set[str] = field(default_factory=set)
    """NVML functions that raise NotSupported on this card."""


def fake_nvml(gpus: list[FakeGpu], init_error: Exception | None = None) -> ModuleType:
    """A module with pynvml's API over ``gpus``; counts nvmlInit calls in ``init_calls``."""
    module = ModuleType("pynvml")
    module.NVMLError = NVMLError  # type: ignore[attr-defined]
    module.init_calls = 0  # type: ignore[attr-defined]

    def init() -> None:
        module.init_calls += 1  # type: ignore[attr-defined]
        if init_error is not None:
            raise init_error

    def handle(index: int) -> FakeGpu:
        if not 0 <= index < len(gpus):
            raise NVMLError_InvalidArgument()
        return gpus[index]

    def query(name: str, answer: Callable[[FakeGpu], Any]) -> Callable[[FakeGpu], Any]:
        def call(gpu: FakeGpu) -> Any:
            if name in gpu.unsupported:
                raise NVMLError_NotSupported()
            return answer(gpu)
        return call

    functions: dict[str, Callable[..., Any]] = {
        "nvmlInit": init,
        "nvmlSystemGetDriverVersion": lambda: "550.54.15",
        "nvmlDeviceGetCount": lambda: len(gpus),
        "nvmlDeviceGetHandleByIndex": handle,
        "nvmlDeviceGetName": query("nvmlDeviceGetName", lambda g: g.name),
        "nvmlDeviceGetUUID": query("nvmlDeviceGetUUID", lambda g: g.uuid),
        "nvmlDeviceGetCudaComputeCapability": lambda g: (8, 0),
        "nvmlDeviceGetUtilizationRates": query(
            "nvmlDeviceGetUtilizationRates", lambda g: SimpleNamespace(gpu=g.util_percent, memory=5)),
        "nvmlDeviceGetMemoryInfo": query(
            "nvmlDeviceGetMemoryInfo",
            lambda g: SimpleNamespace(total=g.memory_total, used=g.memory_used,
                                      free=g.memory_total - g.memory_used)),
        "nvmlDeviceGetPowerUsage": query("nvmlDeviceGetPowerUsage", lambda g: g.power_mw()),
        "nvmlDeviceGetEnforcedPowerLimit": query("nvmlDeviceGetEnforcedPowerLimit",
                                                 lambda g: g.limit_mw),
        "nvmlDeviceGetTotalEnergyConsumption": query("nvmlDeviceGetTotalEnergyConsumption",
                                                     lambda g: g.energy_mj()),
    }
    for name, fn in functions.items():
        setattr(module, name, fn)
    return module


@pytest.fixture
def install(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[ModuleType | None], None]]:
    """Put a fake (or, with None, no) pynvml in place and make hardware.nvml initialise afresh."""

    def put(module: ModuleType | None) -> None:
        monkeypatch.setitem(sys.modules, "pynvml", module)  # None makes `import pynvml` fail
        nvml.reset_nvml()

    yield put
    nvml.reset_nvml()


def counter(*values: int) -> Callable[[], int]:
    """An energy counter that answers ``values`` in turn, then keeps the last."""
    it = iter(values)
    last = [values[0]]

    def read() -> int:
        last[0] = next(it, last[0])
        return last[0]
    return read


# --- gpu_readings -----------------------------------------------------------------------------

def test_readings_convert_nvml_units(install: Callable[[ModuleType | None], None]) -> None:
    install(fake_nvml([FakeGpu(), FakeGpu(name="Fake L4", uuid="GPU-1111", util_percent=0)]))
    first, second = gpu_readings()
    assert first == GpuReading(
        index=0, name="Fake A100", uuid="GPU-0000", utilization=0.37,
        memory_used_bytes=3 * 2**30, memory_total_bytes=40 * 2**30,
        power_w=123.456, power_limit_w=300.0, energy_j=5000.0,
    )
    assert (second.index, second.name, second.uuid, second.utilization) == (1, "Fake L4", "GPU-1111", 0.0)


def test_a_query_the_card_cannot_answer_leaves_only_that_field_empty(
        install: Callable[[ModuleType | None], None]) -> None:
    gpu = FakeGpu(unsupported={"nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetUtilizationRates"})
    install(fake_nvml([gpu]))
    (reading,) = gpu_readings()
    assert reading.energy_j is None and reading.utilization is None
    assert reading.power_w == pytest.approx(123.456)
    assert reading.memory_total_bytes == 40 * 2**30
    assert reading.name == "Fake A100"


def test_without_pynvml_there_are_no_readings(install: Callable[[ModuleType | None], None]) -> None:
    install(None)
    assert gpu_readings() == []
    meter = EnergyMeter("cuda")
    with meter:
        pass
    assert meter.joules is None and meter.source is None
    assert meter.unavailable == "no NVML: nvidia-ml-py is not installed"


def test_a_failed_init_is_remembered_and_named(install: Callable[[ModuleType | None], None]) -> None:
    module = fake_nvml([FakeGpu()], init_error=NVMLError_LibraryNotFound())
    install(module)
    assert gpu_readings() == []
    assert gpu_readings() == []
    assert not EnergyMeter.available("cuda")
    assert module.init_calls == 1  # type: ignore[attr-defined]
    with EnergyMeter("cuda:0") as meter:
        pass
    assert meter.joules is None
    assert meter.unavailable == "no NVML: NVML Shared Library Not Found"


@pytest.mark.skipif(bool(detect().gpus), reason="this machine has NVML")
def test_the_real_pynvml_without_a_driver_gives_nothing(install: Callable[[ModuleType | None], None]) -> None:
    pynvml = pytest.importorskip("pynvml")
    install(pynvml)
    assert gpu_readings() == []
    meter = EnergyMeter("cuda")
    with meter:
        pass
    assert meter.joules is None
    assert meter.unavailable is not None and meter.unavailable.startswith("no NVML: ")


# --- EnergyMeter on a GPU ---------------------------------------------------------------------

def test_meter_takes_the_energy_counter_delta(install: Callable[[ModuleType | None], None]) -> None:
    install(fake_nvml([FakeGpu(energy_mj=counter(1_000_000, 1_250_500))]))
    with EnergyMeter("cuda") as meter:
        pass
    assert meter.unavailable is None
    assert meter.source == "nvml energy counter"
    assert meter.joules == pytest.approx(250.5)
    assert meter.joules_per(10) == pytest.approx(25.05)
    assert meter.joules_per(0) is None


def test_meter_integrates_power_where_the_card_has_no_counter(
        install: Callable[[ModuleType | None], None]) -> None:
    # A fake clock 0.05 s ahead on every reading; the card draws 100 W before t = 0.1 s and
    # 300 W from then on. The endpoints alone would average to 200 W over the region: only the
    # samples in between get the integral right.
    lock, now = threading.Lock(), [0.0]

    def clock() -> float:
        with lock:
            t = now[0]
            now[0] = round(t + 0.05, 10)
            return t

    def watts() -> int:  # read just before the meter reads the clock: the draw at that time
        return 100_000 if now[0] < 0.1 else 300_000

    install(fake_nvml([FakeGpu(power_mw=watts, unsupported={"nvmlDeviceGetTotalEnergyConsumption"})]))
    with EnergyMeter("cuda:0", sample_interval_s=0.001, clock=clock) as meter:
        for _ in range(5000):  # until the sampler has taken 8 readings (bounded)
            if len(meter._samples) >= 8:
                break
            time.sleep(0.001)
    assert meter.source == "nvml power samples"
    assert meter.unavailable is None and meter.joules is not None
    times = [t for t, _ in meter._samples]
    assert times[0] == pytest.approx(0.05) and len(times) >= 9
    assert np.diff(times[:8]) == pytest.approx(0.05)  # one clock reading per sample
    last = times[-1]
    # 0.05 → 0.10: the ramp from 100 to 300 W (10 J); then 300 W to the last sample.
    assert meter.joules == pytest.approx(10 + 300 * (last - 0.10))
    assert meter.joules != pytest.approx(200 * (last - 0.05))
    assert times[7] < meter.seconds < last  # the exit reading, then the closing sample
    assert not any(t.name.startswith("inferno-power") for t in threading.enumerate())


def test_meter_names_a_gpu_that_is_not_there(install: Callable[[ModuleType | None], None]) -> None:
    install(fake_nvml([FakeGpu()]))
    assert EnergyMeter.available("cuda:0")
    assert not EnergyMeter.available("cuda:3")
    with EnergyMeter("cuda:3") as meter:
        pass
    assert meter.joules is None
    assert meter.unavailable == "no GPU 3: InvalidArgument"


def test_meter_without_counter_or_power_says_so(install: Callable[[ModuleType | None], None]) -> None:
    unsupported = {"nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetPowerUsage"}
    install(fake_nvml([FakeGpu(unsupported=unsupported)]))
    assert not EnergyMeter.available("cuda")
    with EnergyMeter("cuda") as meter:
        pass
    assert meter.joules is None
    assert meter.unavailable == "GPU 0 reports neither an energy counter nor power"


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "cuda:-1", "CPU"])
def test_meter_rejects_an_unknown_device(device: str) -> None:
    with pytest.raises(ConfigError, match=f"device '{device}'"):
        EnergyMeter(device)


# --- EnergyMeter on the CPU (RAPL) ------------------------------------------------------------

MAX_UJ = 262_143_328_850


def zone(root: Path, name: str, label: str, energy_uj: int) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "name").write_text(label + "\n")
    (folder / "energy_uj").write_text(f"{energy_uj}\n")
    (folder / "max_energy_range_uj").write_text(f"{MAX_UJ}\n")
    return folder


def set_uj(folder: Path, energy_uj: int) -> None:
    (folder / "energy_uj").write_text(f"{energy_uj}\n")


def test_rapl_sums_packages_across_a_wrap(tmp_path: Path) -> None:
    pkg0 = zone(tmp_path, "intel-rapl:0", "package-0", MAX_UJ - 1_000_000)
    pkg1 = zone(tmp_path, "intel-rapl:1", "package-1", 10_000_000)
    # Neither of these may count: a subzone of package-0, the platform zone, and the MMIO
    # interface to package-0's own counter.
    others = [zone(tmp_path, "intel-rapl:0:0", "core", 0), zone(tmp_path, "intel-rapl:2", "psys", 0),
              zone(tmp_path, "intel-rapl-mmio:0", "package-0", 0)]
    assert EnergyMeter.available("cpu", powercap_root=tmp_path)
    with EnergyMeter("cpu", powercap_root=tmp_path) as meter:
        set_uj(pkg0, 500_000)  # wrapped: 1 J to the top, 0.5 J after
        set_uj(pkg1, 13_000_000)
        for folder in others:
            set_uj(folder, 99_000_000)
    assert meter.unavailable is None
    assert meter.source == "rapl"
    assert meter.joules == pytest.approx(1.5 + 3.0)


def test_rapl_without_powercap_says_why(tmp_path: Path) -> None:
    missing = tmp_path / "powercap"
    assert not EnergyMeter.available("cpu", powercap_root=missing)
    with EnergyMeter("cpu", powercap_root=missing) as meter:
        pass
    assert meter.joules is None
    assert meter.unavailable == f"RAPL not readable: {missing} does not exist"
    zone(tmp_path, "intel-rapl:0", "psys", 0)
    with EnergyMeter("cpu", powercap_root=tmp_path) as meter:
        pass
    assert meter.unavailable == f"RAPL not readable: {tmp_path} has no intel-rapl package zone"


def test_rapl_counter_readable_only_by_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    zone(tmp_path, "intel-rapl:0", "package-0", 0)
    read_text = Path.read_text

    def guarded(self: Path, *args: Any, **kwargs: Any) -> str:
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(self))
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", guarded)  # tests run as root here: chmod would not bite
    with EnergyMeter("cpu", powercap_root=tmp_path) as meter:
        pass
    assert meter.joules is None
    assert meter.unavailable is not None
    assert "Permission denied" in meter.unavailable and "root-only" in meter.unavailable


def test_rapl_counter_that_vanishes_mid_region(tmp_path: Path) -> None:
    pkg0 = zone(tmp_path, "intel-rapl:0", "package-0", 0)
    with EnergyMeter("cpu", powercap_root=tmp_path) as meter:
        (pkg0 / "energy_uj").unlink()
    assert meter.joules is None
    assert meter.unavailable is not None and "energy_uj" in meter.unavailable


# --- hardware: driver, power limit and UUID of each GPU ---------------------------------------

def test_hardware_fills_driver_power_limit_and_uuid_from_nvml(
        install: Callable[[ModuleType | None], None]) -> None:
    install(fake_nvml([FakeGpu(), FakeGpu(name="Fake T4", uuid="GPU-1111",
                                          unsupported={"nvmlDeviceGetEnforcedPowerLimit"})]))
    notes: list[str] = []
    assert hardware._gpus(notes) == (
        GpuInfo(0, "Fake A100", 40 * 1024, "8.0", driver="550.54.15", power_limit_w=300.0,
                uuid="GPU-0000"),
        GpuInfo(1, "Fake T4", 40 * 1024, "8.0", driver="550.54.15", power_limit_w=None,
                uuid="GPU-1111"),
    )
    assert notes == []


def test_hardware_reads_the_same_fields_from_nvidia_smi(
        install: Callable[[ModuleType | None], None], monkeypatch: pytest.MonkeyPatch) -> None:
    install(None)
    out = ("0, NVIDIA A10G, 23028, 8.6, 550.54.15, 300.00, GPU-aaaa\n"
           "1, Tesla K80, 11441, 3.7, 470.82.01, [N/A], GPU-bbbb\n"
           "garbled row\n")
    monkeypatch.setattr(hardware.subprocess, "run", lambda *a, **k: SimpleNamespace(stdout=out))
    assert hardware._gpus([]) == (
        GpuInfo(0, "NVIDIA A10G", 23028, "8.6", "550.54.15", 300.0, "GPU-aaaa"),
        GpuInfo(1, "Tesla K80", 11441, "3.7", "470.82.01", None, "GPU-bbbb"),
    )


# --- on a real GPU ----------------------------------------------------------------------------

@pytest.mark.gpu
def test_real_gpu_readings_and_energy() -> None:
    torch = pytest.importorskip("torch")
    nvml.reset_nvml()
    readings = gpu_readings()
    assert readings, "NVML saw no GPU"
    assert all(r.memory_total_bytes and r.memory_total_bytes > 0 for r in readings)
    a = torch.randn(4096, 4096, device="cuda")
    with EnergyMeter("cuda") as meter:
        deadline = time.monotonic() + power.MIN_ENERGY_WINDOW_S
        while time.monotonic() < deadline:
            for _ in range(10):
                a = (a @ a).clamp_(-1, 1)
            torch.cuda.synchronize()
    assert meter.unavailable is None, meter.unavailable
    assert meter.seconds >= power.MIN_ENERGY_WINDOW_S
    assert meter.joules is not None and meter.joules > 0
